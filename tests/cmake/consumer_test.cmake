# Installs the build tree into a scratch prefix, builds tests/cmake/consumer against it with
# find_package(torchpool), and runs it. Called by CTest with -DBUILD_DIR=... -DSOURCE_DIR=...
# -DWORK_DIR=...
file(REMOVE_RECURSE "${WORK_DIR}")
foreach(step
        "${CMAKE_COMMAND};--install;${BUILD_DIR};--prefix;${WORK_DIR}/prefix"
        "${CMAKE_COMMAND};-S;${SOURCE_DIR}/tests/cmake/consumer;-B;${WORK_DIR}/build;-G;Ninja;-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix;-DCMAKE_CXX_FLAGS=${CONSUMER_CXX_FLAGS};-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_LINKER_FLAGS}"
        "${CMAKE_COMMAND};--build;${WORK_DIR}/build"
        "${WORK_DIR}/build/consumer_host;${WORK_DIR}/build/consumer_worker"
        "${WORK_DIR}/build/consumer_embedded_host;${WORK_DIR}/build/consumer_worker")
    execute_process(COMMAND ${step} RESULT_VARIABLE result)
    if(NOT result EQUAL 0)
        message(FATAL_ERROR "consumer test: '${step}' failed (${result})")
    endif()
endforeach()
