# cmake/arm-none-eabi.cmake — CMake toolchain file for bare-metal Cortex-M
# firmware with Debian's gcc-arm-none-eabi and newlib-nano
# (libnewlib-arm-none-eabi). The CPU (-mcpu) is chosen per board by
# mappers/boards/firmware/CMakeLists.txt, so one build holds every board.
#
#   cmake -S mappers/boards/firmware -B build/firmware \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

find_program(KE_ARM_GCC arm-none-eabi-gcc REQUIRED)
set(CMAKE_C_COMPILER ${KE_ARM_GCC})
set(CMAKE_ASM_COMPILER ${KE_ARM_GCC})
find_program(CMAKE_OBJCOPY arm-none-eabi-objcopy REQUIRED)
find_program(KE_ARM_SIZE arm-none-eabi-size REQUIRED)
find_program(KE_ARM_NM arm-none-eabi-nm REQUIRED)

# No OS to link a test program against: compiler checks build a library.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# Small code, unused functions and data dropped at link time, Thumb only.
set(CMAKE_C_FLAGS_INIT "-mthumb -Os -g -ffunction-sections -fdata-sections -fno-common")
# newlib-nano's libc (memcpy, memset, strlen for nanopb); no crt0: each
# board's startup.c is the entry point. No syscalls are provided, so a
# stray printf or malloc fails the link instead of growing the image.
set(CMAKE_EXE_LINKER_FLAGS_INIT "--specs=nano.specs -nostartfiles -Wl,--gc-sections")

# Host programs (protoc) from the host; libraries and headers from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
