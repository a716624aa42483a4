# Writes OUT, a C++ file defining `std::string_view NAME()` that returns the bytes of
# IN. Run as `cmake -DIN=... -DOUT=... -DNAME=... -DHEADER=... -P embed_text.cmake`.
# The text goes in as hexadecimal bytes: no delimiter in the file can end it early.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" len)
math(EXPR bytes "${len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," body "${hex}")
string(REGEX REPLACE "(('\\\\x[0-9a-f][0-9a-f]',){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by cmake/embed_text.cmake; do not edit.\n"
  "#include \"${HEADER}\"\n\nnamespace parry {\nnamespace {\n"
  "const char text[] = {\n${body}'\\0'};\n}\n\n"
  "std::string_view ${NAME}() {\n  return {text, ${bytes}};\n}\n\n} // namespace parry\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
