// GET /metrics: the server's and its pools' figures in the Prometheus text format, through
// Debian's prometheus-cpp (its registry and text serializer). The server's own series are
// prometheus-cpp metrics updated as requests end; the pools' are read from pool::stats() at
// each scrape (workers by state, queue depth, outcomes, deaths by cause, restarts, and the
// latency histograms the pool keeps), so nothing is counted twice.
#pragma once

#include <torchpool/pool.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <string>
#include <utility>
#include <vector>

namespace torchpool::serve {

/// A model served, as the metrics see it.
struct metrics_source {
    std::string name;
    const pool* workers = nullptr;
    /// Requests waiting to be sent in a batch, now (optional).
    std::function<std::size_t()> waiting_for_batch;
};

/// The server's connections, now.
struct connection_figures {
    std::size_t open = 0;
    /// Closed by the server: past the deadline of their stage (a slow or idle client), to make
    /// room near the connection cap, and waiting for a request when the drain began.
    std::uint64_t past_deadline = 0;
    std::uint64_t evicted = 0;
    std::uint64_t drained = 0;
};

/// Thread-safe, except scrape(), which reads the pools' stats: call it on their executor.
class server_metrics {
public:
    explicit server_metrics(std::vector<metrics_source> models);

    /// The server gave an answer of HTTP `status`: `model` names the served model of an
    /// infer request (its /infer endpoint), empty for every other answer (health, metadata,
    /// metrics, unknown models, answers given before a request was routed).
    void answered(const std::string& model, unsigned status);
    /// An infer request of `model` was answered `elapsed` after it arrived.
    void infer_latency(const std::string& model, std::chrono::microseconds elapsed);
    /// A task of `rows` rows (a batch, or one request alone) was sent for `model`.
    void batch_sent(const std::string& model, std::size_t rows);

    /// Where the connections' figures are read at each scrape.
    void connections_from(std::function<connection_figures()> f) { connections_ = std::move(f); }

    /// The text exposition format (version 0.0.4).
    std::string scrape() const;

private:
    struct per_model {
        std::string name;
        const pool* workers;
        std::function<std::size_t()> waiting_for_batch;
        prometheus::Histogram* latency;
        prometheus::Histogram* batch_rows;
        // The request counter of each HTTP status seen, found once (a registry lookup builds
        // a label map and takes a lock).
        std::vector<std::pair<unsigned, prometheus::Counter*>> by_status;
    };
    per_model* find(const std::string& model);
    // The counter of `status` in `by_status`, found once (under counters_mutex_).
    prometheus::Counter& counter(std::vector<std::pair<unsigned, prometheus::Counter*>>& by_status,
                                 const std::string& model, unsigned status);

    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter>& requests_;
    prometheus::Family<prometheus::Histogram>& latency_;
    prometheus::Family<prometheus::Histogram>& batch_rows_;
    std::vector<per_model> models_;
    std::vector<std::pair<unsigned, prometheus::Counter*>> other_by_status_;  // model=""
    std::function<connection_figures()> connections_;
    std::mutex counters_mutex_;
};

}  // namespace torchpool::serve
