// torchpool-serve: an inference server over torchpool pools of LibTorch workers, speaking the
// Open Inference Protocol (KServe v2 REST). One thread (main's io_context) supervises: the
// pools, their workers' channels and exits, the batchers and the timers. HTTP sessions run on
// --http-threads threads of their own, or on that one thread with 0.
//
// main: parse the options, build the models and the server, run.
#include "config.hpp"
#include "drain.hpp"
#include "endpoints.hpp"
#include "listener.hpp"
#include "metrics.hpp"
#include "models.hpp"
#include <torchpool/open_files.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

namespace asio = boost::asio;
using namespace torchpool;
using namespace torchpool::serve;

namespace {

asio::ip::tcp::acceptor listen_on(asio::io_context& io, const server_options& opt) {
    asio::ip::tcp::acceptor acceptor(io);
    const asio::ip::tcp::endpoint at(asio::ip::make_address(opt.host), opt.port);
    acceptor.open(at.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(at);
    acceptor.listen(asio::socket_base::max_listen_connections);
    return acceptor;
}

server_metrics make_metrics(std::vector<served_model>& models) {
    std::vector<metrics_source> pools;
    for (const auto& m : models) {
        pools.push_back({m.config.name, m.workers.get(),
                         [batches = m.batches.get()] { return batches->waiting(); }});
    }
    return server_metrics(std::move(pools));
}

void announce(const server_options& opt, unsigned short port,
              const std::vector<served_model>& models) {
    const auto& first = models.front().config;
    std::printf("listening on http://%s:%u (models: ", opt.host.c_str(),
                static_cast<unsigned>(port));
    for (std::size_t i = 0; i < models.size(); ++i) {
        std::printf("%s%s", i ? ", " : "", models[i].config.name.c_str());
    }
    std::printf(")\ntry: curl -s -d @%s http://%s:%u/v2/models/%s/infer\n",
                sample_request(first).c_str(), opt.host.c_str(), static_cast<unsigned>(port),
                first.name.c_str());
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    auto parsed = parse_options(argc, argv);
    if (const auto* code = std::get_if<int>(&parsed)) {
        return *code;
    }
    const auto& opt = std::get<server_options>(parsed);

    asio::io_context io(1);
    std::optional<asio::ip::tcp::acceptor> acceptor;
    std::vector<served_model> models;
    std::optional<open_files_reservation> connection_files;
    try {
        models = make_models(io.get_executor(), opt,
                             [&] { announce(opt, acceptor->local_endpoint().port(), models); });
        // Each connection holds a descriptor: room for all of them, counted with the pools'.
        connection_files.emplace(
            opt.limits.max_connections,
            std::to_string(opt.limits.max_connections) + " HTTP connections (--max-connections)");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-serve: %s\n", e.what());
        return 2;
    }
    try {
        acceptor.emplace(listen_on(io, opt));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-serve: cannot listen on %s:%u: %s\n", opt.host.c_str(),
                     static_cast<unsigned>(opt.port), e.what());
        return 2;
    }
    auto metrics = make_metrics(models);
    for (auto& m : models) {
        m.batches->on_send(
            [&metrics, name = m.config.name](std::size_t rows) { metrics.batch_sent(name, rows); });
    }
    std::size_t workers = 0;
    for (const auto& m : models) {
        workers += m.workers->health().workers;
    }
    const auto http_threads = opt.http_threads.value_or(
        http_threads_for(workers, std::max(1u, std::thread::hardware_concurrency())));
    endpoints app(models, metrics, opt.limits, io.get_executor());
    listener http(*acceptor, app, metrics, opt.limits, http_threads);
    drain on_term(io.get_executor(), http, models, opt.drain_timeout);
    for (auto& m : models) {
        m.workers->async_run(asio::detached);
    }
    std::printf(
        "starting %zu worker%s; requests are accepted on port %u already (HTTP on %s)\n", workers,
        workers == 1 ? "" : "s", static_cast<unsigned>(acceptor->local_endpoint().port()),
        http_threads == 0   ? "the supervising thread"
        : http_threads == 1 ? "1 thread of its own"
                            : (std::to_string(http_threads) + " threads of its own").c_str());
    std::fflush(stdout);
    asio::co_spawn(io, http.run(), asio::detached);
    on_term.on_signals();
    io.run();
    std::printf("stopped\n");
    return 0;
}
