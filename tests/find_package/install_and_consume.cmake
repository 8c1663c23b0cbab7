# CTest script: install the build tree into a scratch prefix, then configure, build and run consumers that
# find airl with find_package(). Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, CXX_COMPILER, GENERATOR,
# EXPECT_REDIS (airl::redis was built). Cases:
#   1. the core and, when built, the redis component are found and work;
#   2. with hiredis hidden from the consumer (as on a machine without it), find_package(airl) still succeeds
#      and the core works;
#   3. with hiredis hidden, find_package(airl COMPONENTS redis) fails, saying why;
#   4. when built, find_package(airl COMPONENTS redis) succeeds where hiredis is.
file(REMOVE_RECURSE "${WORK_DIR}")

function(run_step)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "step failed (${code}): ${ARGV}")
  endif()
endfunction()

# Configures the consumer into WORK_DIR/<name> with the extra arguments; returns the result and output.
function(configure_consumer name result output)
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/${name}" -G "${GENERATOR}"
                          "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" ${ARGN}
                  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${result} "${code}" PARENT_SCOPE)
  set(${output} "${out}${err}" PARENT_SCOPE)
endfunction()

# What a machine without hiredis looks like to find_package: neither hiredis's CMake package nor pkg-config.
set(no_hiredis -DCMAKE_DISABLE_FIND_PACKAGE_hiredis=ON -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON)

run_step("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")

# 1. Everything there.
configure_consumer(all code out)
if(NOT code EQUAL 0)
  message(FATAL_ERROR "find_package(airl) failed:\n${out}")
endif()
run_step("${CMAKE_COMMAND}" --build "${WORK_DIR}/all")
run_step("${WORK_DIR}/all/airl_consumer")
if(EXISTS "${WORK_DIR}/all/airl_redis_consumer")
  run_step("${WORK_DIR}/all/airl_redis_consumer")
elseif(EXPECT_REDIS)
  message(FATAL_ERROR "airl::redis was installed but the consumer did not find it")
endif()

# 2. A core-only consumer where hiredis is missing.
configure_consumer(core_only code out ${no_hiredis})
if(NOT code EQUAL 0)
  message(FATAL_ERROR "find_package(airl) needed hiredis for the core:\n${out}")
endif()
run_step("${CMAKE_COMMAND}" --build "${WORK_DIR}/core_only")
run_step("${WORK_DIR}/core_only/airl_consumer")
if(EXISTS "${WORK_DIR}/core_only/airl_redis_consumer")
  message(FATAL_ERROR "airl::redis was made without hiredis")
endif()

# 3. The redis component required where hiredis is missing: a clear failure.
configure_consumer(redis_missing code out ${no_hiredis} -DAIRL_CONSUMER_WANTS_REDIS=ON)
if(code EQUAL 0)
  message(FATAL_ERROR "find_package(airl COMPONENTS redis) succeeded without hiredis")
endif()
if(EXPECT_REDIS)
  set(why "needs hiredis")
else()
  set(why "without its Redis backend")
endif()
if(NOT out MATCHES "${why}")
  message(FATAL_ERROR "find_package(airl COMPONENTS redis) failed without saying '${why}':\n${out}")
endif()

# 4. The redis component required where hiredis is.
if(EXPECT_REDIS)
  configure_consumer(redis code out -DAIRL_CONSUMER_WANTS_REDIS=ON)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "find_package(airl COMPONENTS redis) failed:\n${out}")
  endif()
  run_step("${CMAKE_COMMAND}" --build "${WORK_DIR}/redis")
  run_step("${WORK_DIR}/redis/airl_redis_consumer")
endif()
message(STATUS "install_and_consume: every case passed")
