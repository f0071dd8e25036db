# image_size.cmake — prints one firmware image's flash and RAM use and
# fails when they pass the budget (issue #12: 16 KiB flash, 6 KiB RAM).
#
#   cmake -DELF=x.elf -DSIZE=arm-none-eabi-size -DNM=arm-none-eabi-nm
#         -DFLASH_MAX=16384 -DRAM_MAX=6144 -P image_size.cmake
#
# flash = .text (vectors, code, constants) + .ARM.exidx + .data's initial
# values; RAM = .data + .bss + .stack (the stack the linker script reserves).
# It also refuses an image that links an allocator: firmware has no heap.
execute_process(COMMAND ${SIZE} -A ${ELF} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${SIZE} -A ${ELF} failed")
endif()
set(text 0)
set(exidx 0)
set(data 0)
set(bss 0)
set(stack 0)
string(REPLACE "\n" ";" lines "${out}")
foreach(l ${lines})
  if(l MATCHES "^\\.text[ \t]+([0-9]+)")
    set(text ${CMAKE_MATCH_1})
  elseif(l MATCHES "^\\.ARM\\.exidx[ \t]+([0-9]+)")
    set(exidx ${CMAKE_MATCH_1})
  elseif(l MATCHES "^\\.data[ \t]+([0-9]+)")
    set(data ${CMAKE_MATCH_1})
  elseif(l MATCHES "^\\.bss[ \t]+([0-9]+)")
    set(bss ${CMAKE_MATCH_1})
  elseif(l MATCHES "^\\.stack[ \t]+([0-9]+)")
    set(stack ${CMAKE_MATCH_1})
  endif()
endforeach()
math(EXPR flash "${text} + ${exidx} + ${data}")
math(EXPR ram "${data} + ${bss} + ${stack}")
get_filename_component(name ${ELF} NAME_WE)
get_filename_component(dir ${ELF} DIRECTORY)
get_filename_component(board ${dir} NAME)
message("firmware ${board}/${name}: flash ${flash} B (text ${text}, data ${data}) of ${FLASH_MAX}; "
        "RAM ${ram} B (data ${data}, bss ${bss}, stack ${stack}) of ${RAM_MAX}")

execute_process(COMMAND ${NM} ${ELF} OUTPUT_VARIABLE syms)
if(syms MATCHES "[ \t](malloc|_malloc_r|calloc|realloc|_sbrk)\n")
  message(FATAL_ERROR "firmware ${board}/${name} links an allocator (${CMAKE_MATCH_1}): firmware must not allocate")
endif()
if(flash GREATER FLASH_MAX)
  message(FATAL_ERROR "firmware ${board}/${name}: flash ${flash} B is over the budget of ${FLASH_MAX} B")
endif()
if(ram GREATER RAM_MAX)
  message(FATAL_ERROR "firmware ${board}/${name}: RAM ${ram} B is over the budget of ${RAM_MAX} B")
endif()
