# How torchpool finds each external dependency. All of them are Debian 12 packages,
# installed by scripts/setup.sh; nothing is vendored and nothing is downloaded.
#
#   Boost 1.81 (Asio, Beast, System) ... libboost1.81-dev
#   Boost.JSON 1.81 .................... libboost-json1.81-dev (the inference server, later)
#   Cap'n Proto 0.9.2 .................. libcapnp-dev, capnproto (schema compiler)
#   Catch2 2.13 ........................ catch2 (tests only)

find_package(Boost 1.81 REQUIRED CONFIG)
find_package(CapnProto 0.9 REQUIRED CONFIG)
if(TORCHPOOL_BUILD_TESTS)
    find_package(Catch2 2.13 REQUIRED CONFIG)
endif()
find_package(Threads REQUIRED)
