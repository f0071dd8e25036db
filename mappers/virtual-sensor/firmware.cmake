# mappers/virtual-sensor: the firmware image, for every board
# (included by mappers/boards/firmware/CMakeLists.txt). The SDK core is
# compiled into the image; the device name is fixed at build time
# (KE_VSENSOR_DEVICE, default "vsensor-1"; the bridge maps a line to it).
set(KE_VSENSOR_DEVICE "vsensor-1" CACHE STRING "the virtual-sensor firmware's device name")
set(_vs ${KE_SOURCE_DIR}/mappers/virtual-sensor)
set(_sdk ${KE_SOURCE_DIR}/mappers/sdk)
ke_firmware_image(virtual-sensor
  SOURCES ${_vs}/fw_main.c ${_vs}/vsensor.c
          ${_sdk}/ke_frame.c ${_sdk}/ke_link.c ${_sdk}/ke_mapper.c
  LIBS ke_nanopb
  STACK 1536)
foreach(b ${KE_BOARDS})
  target_include_directories(virtual-sensor_${b} PRIVATE ${_vs} ${_sdk})
  target_compile_definitions(virtual-sensor_${b} PRIVATE KE_VSENSOR_DEVICE="${KE_VSENSOR_DEVICE}")
endforeach()
