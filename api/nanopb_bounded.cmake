# Fails the build when nanopb turned a field into a callback: that happens
# for a string, bytes or repeated field with no bound in mapper.options, and
# firmware without an allocator cannot use it.
file(READ ${HEADER} content)
string(FIND "${content}" "pb_callback_t" pos)
if(NOT pos EQUAL -1)
  message(FATAL_ERROR "${HEADER}: a field has no bound; add max_size/max_count to api/mapper.options")
endif()
