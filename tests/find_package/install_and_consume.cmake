# CTest script: install the build tree into a scratch prefix, then configure, build and run a consumer
# that finds airl with find_package(). Inputs: BUILD_DIR, SOURCE_DIR, WORK_DIR, CXX_COMPILER, GENERATOR,
# EXPECT_REDIS (airl::redis was built, so the consumer must find it too).
file(REMOVE_RECURSE "${WORK_DIR}")

function(run_step)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE code)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "step failed (${code}): ${ARGV}")
  endif()
endfunction()

run_step("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
run_step("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
run_step("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run_step("${WORK_DIR}/build/airl_consumer")
if(EXISTS "${WORK_DIR}/build/airl_redis_consumer")
  run_step("${WORK_DIR}/build/airl_redis_consumer")
elseif(EXPECT_REDIS)
  message(FATAL_ERROR "airl::redis was installed but the consumer did not find it")
endif()
