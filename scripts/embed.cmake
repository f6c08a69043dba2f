# Turns a text file into a header holding it as a raw string literal.
file(READ ${IN} text)
file(WRITE ${OUT} "#pragma once\nnamespace tprosshy::generated {\ninline constexpr char schema_text[] = R\"tprosshy_schema(${text})tprosshy_schema\";\n}\n")
