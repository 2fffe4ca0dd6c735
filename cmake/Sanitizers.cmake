# ROSTER_SANITIZE=address,undefined builds everything (and so every test) with
# ASan+UBSan; any report aborts the process, which fails the test.
# ROSTER_SANITIZE=thread builds it with TSan instead (not combinable with
# address; scripts/tsan.sh): tests/CMakeLists.txt sets halt_on_error, so a
# race report ends the process with a non-zero status.
if(ROSTER_SANITIZE)
    set(_san "-fsanitize=${ROSTER_SANITIZE}" -fno-sanitize-recover=all -fno-omit-frame-pointer)
    add_compile_options(${_san})
    add_link_options(${_san})
endif()
