# Compiler warnings, one reason per flag (curl's PickyWarnings is the model).
# ROSTER_WERROR turns them into errors; CI sets it.
set(ROSTER_WARNING_FLAGS
    -Wall -Wextra                 # the baseline
    -Wshadow                      # a shadowed name is a bug waiting to happen
    -Wstrict-prototypes           # f() means "any arguments" in C
    -Wmissing-prototypes          # non-static functions need a header declaration
    -Wold-style-definition
    -Wpointer-arith               # arithmetic on void *
    -Wwrite-strings               # string literals are const
    -Wformat=2                    # printf-family format checks, incl. non-literal formats
    -Wvla                         # no variable-length arrays: stack size must be bounded
    -Wundef                       # #if on an undefined macro
    -Wimplicit-fallthrough        # switch fallthrough must be marked
    -Wnull-dereference
    -Werror=implicit-function-declaration
    -Werror=incompatible-pointer-types
    -Werror=format-security
)
if(ROSTER_WERROR)
    list(APPEND ROSTER_WARNING_FLAGS -Werror)
endif()
