# Finds hiredis and provides the imported target hiredis::hiredis, whatever the installation offers:
# hiredis 1.x ships a CMake config with hiredis::hiredis; Debian's 0.14 ships one with no target (and a
# version file that breaks without a version), so fall back to pkg-config there. Used by airl's build and by
# the installed airlConfig.cmake.
if(NOT TARGET hiredis::hiredis)
  find_package(hiredis CONFIG QUIET)
endif()
if(NOT TARGET hiredis::hiredis)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(AIRL_HIREDIS QUIET IMPORTED_TARGET GLOBAL hiredis)
    if(TARGET PkgConfig::AIRL_HIREDIS)
      add_library(hiredis::hiredis ALIAS PkgConfig::AIRL_HIREDIS)
    endif()
  endif()
endif()
