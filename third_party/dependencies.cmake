# How torchpool finds each external dependency. All of them are Debian 12 packages,
# installed by scripts/setup.sh; nothing is vendored and nothing is downloaded.
#
#   Boost 1.81 (Asio, Beast, System) ... libboost1.81-dev
#   Boost.JSON 1.81 .................... libboost-json1.81-dev (the inference server)
#   CLI11 2.1 .......................... libcli11-dev (the inference server's command line)
#   curl ............................... curl (the inference server's end-to-end tests)
#   wrk ................................ wrk (the inference server's load benchmark)
#   slowhttptest ....................... slowhttptest (the inference server's slow-client test)
#   prometheus-cpp 1.0 ................. prometheus-cpp-dev (the inference server's /metrics)
#   Cap'n Proto 0.9.2 .................. libcapnp-dev, capnproto (schema compiler)
#   Catch2 2.13 ........................ catch2 (tests only)
#   LibTorch 1.13.1 (CPU) .............. libtorch-dev (worker side only: the LibTorch worker,
#                                        the trainer, their tests; never the host library)
#   OpenBLAS (OpenMP build) ............ libopenblas0-openmp (LibTorch's BLAS at run time: the
#                                        reference libblas3 is ~20x slower; this build starts
#                                        no thread before its first use, as the fork server
#                                        needs)
#   zlib ............................... zlib1g-dev (reads the gzip'd dataset files)
#   Fashion-MNIST ...................... dataset-fashion-mnist (data, trains the default model)
#   Clang 14, libFuzzer ................ clang-14, libclang-rt-14-dev (the clang and fuzz presets:
#                                        the second compiler; fuzz targets with ASan + UBSan)

find_package(Boost 1.81 REQUIRED CONFIG)
find_package(CapnProto 0.9 REQUIRED CONFIG)
if(TORCHPOOL_BUILD_TESTS)
    find_package(Catch2 2.13 REQUIRED CONFIG)
endif()
find_package(Threads REQUIRED)
find_package(boost_json 1.81 REQUIRED CONFIG)
find_package(CLI11 2.1 REQUIRED CONFIG)
# (Debian ships no version file for it.)
find_package(prometheus-cpp REQUIRED CONFIG)

if(TORCHPOOL_WITH_TORCH)
    # Debian's TorchConfig.cmake; its `torch` target carries the C++ ABI flag LibTorch needs.
    find_package(Torch 1.13 REQUIRED CONFIG)
    find_package(ZLIB REQUIRED)
endif()
