#include "metrics.hpp"

#include <algorithm>
#include <prometheus/text_serializer.h>
#include <sstream>

namespace torchpool::serve {

namespace prom = prometheus;

namespace {

prom::Histogram::BucketBoundaries seconds_buckets() {
    prom::Histogram::BucketBoundaries b;
    for (const auto us : latency_histogram::bounds_us) {
        b.push_back(static_cast<double>(us) / 1e6);
    }
    return b;
}

prom::ClientMetric::Label model_label(const std::string& model) {
    return {"model", model};
}

// A pool's histogram (fixed buckets, µs) as a Prometheus histogram in seconds.
prom::ClientMetric histogram_of(const latency_histogram& h, const std::string& model) {
    prom::ClientMetric m;
    m.label = {model_label(model)};
    m.histogram.sample_count = h.count;
    m.histogram.sample_sum = static_cast<double>(h.sum_us) / 1e6;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < latency_histogram::buckets; ++i) {
        cumulative += h.counts[i];
        m.histogram.bucket.push_back(
            {cumulative, i + 1 < latency_histogram::buckets
                             ? static_cast<double>(latency_histogram::bounds_us[i]) / 1e6
                             : std::numeric_limits<double>::infinity()});
    }
    return m;
}

prom::MetricFamily family(std::string name, std::string help, prom::MetricType type) {
    return {std::move(name), std::move(help), type, {}};
}

void add(prom::MetricFamily& f, const std::string& model, double value,
         std::vector<prom::ClientMetric::Label> more = {}) {
    prom::ClientMetric m;
    m.label = {model_label(model)};
    m.label.insert(m.label.end(), more.begin(), more.end());
    if (f.type == prom::MetricType::Counter) {
        m.counter.value = value;
    } else {
        m.gauge.value = value;
    }
    f.metric.push_back(std::move(m));
}

void add_connections(std::vector<prom::MetricFamily>& families, const connection_figures& c) {
    auto open =
        family("torchpool_http_connections", "HTTP connections open, now", prom::MetricType::Gauge);
    prom::ClientMetric now;
    now.gauge.value = static_cast<double>(c.open);
    open.metric.push_back(std::move(now));
    auto cut = family("torchpool_http_connections_cut_total",
                      "HTTP connections the server closed before their client did, by reason: "
                      "past the deadline of their stage (a slow or idle client), evicted to make "
                      "room near --max-connections, waiting for a request when the drain began",
                      prom::MetricType::Counter);
    for (const auto& [reason, n] :
         {std::pair{"deadline", c.past_deadline}, {"evicted", c.evicted}, {"drain", c.drained}}) {
        prom::ClientMetric m;
        m.label = {{"reason", reason}};
        m.counter.value = static_cast<double>(n);
        cut.metric.push_back(std::move(m));
    }
    families.push_back(std::move(open));
    families.push_back(std::move(cut));
}

}  // namespace

server_metrics::server_metrics(std::vector<metrics_source> models)
    : registry_(std::make_shared<prom::Registry>()),
      requests_(prom::BuildCounter()
                    .Name("torchpool_http_requests_total")
                    .Help("Answers the server gave, by HTTP status; model: the served model of "
                          "an infer request, empty for every other answer")
                    .Register(*registry_)),
      latency_(prom::BuildHistogram()
                   .Name("torchpool_request_seconds")
                   .Help("Time from an infer request's arrival to its response, by model")
                   .Register(*registry_)),
      batch_rows_(prom::BuildHistogram()
                      .Name("torchpool_batch_rows")
                      .Help("Rows of each task sent to the workers (a batch, or one request)")
                      .Register(*registry_)) {
    for (auto& [name, workers, waiting] : models) {
        models_.push_back(
            {name,
             workers,
             std::move(waiting),
             &latency_.Add({{"model", name}}, seconds_buckets()),
             &batch_rows_.Add({{"model", name}},
                              prom::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128}),
             {}});
    }
}

server_metrics::per_model* server_metrics::find(const std::string& model) {
    for (auto& m : models_) {
        if (m.name == model) {
            return &m;
        }
    }
    return nullptr;
}

prom::Counter& server_metrics::counter(std::vector<std::pair<unsigned, prom::Counter*>>& by_status,
                                       const std::string& model, unsigned status) {
    const std::lock_guard lock(counters_mutex_);  // HTTP threads answer concurrently
    auto known = std::find_if(by_status.begin(), by_status.end(),
                              [&](const auto& s) { return s.first == status; });
    if (known == by_status.end()) {
        known =
            by_status.emplace(by_status.end(), status,
                              &requests_.Add({{"model", model}, {"code", std::to_string(status)}}));
    }
    return *known->second;
}

void server_metrics::answered(const std::string& model, unsigned status) {
    auto* m = model.empty() ? nullptr : find(model);
    counter(m ? m->by_status : other_by_status_, m ? model : std::string(), status).Increment();
}

void server_metrics::infer_latency(const std::string& model, std::chrono::microseconds elapsed) {
    if (auto* m = find(model)) {
        m->latency->Observe(static_cast<double>(elapsed.count()) / 1e6);
    }
}

void server_metrics::batch_sent(const std::string& model, std::size_t rows) {
    if (auto* m = find(model)) {
        m->batch_rows->Observe(static_cast<double>(rows));
    }
}

std::string server_metrics::scrape() const {
    auto families = registry_->Collect();
    auto workers =
        family("torchpool_workers", "Worker processes by state, now", prom::MetricType::Gauge);
    auto queue = family("torchpool_queue_depth",
                        "Requests waiting for a worker, now: in the pool's queue, waiting for room "
                        "in it, or waiting to be sent in a batch",
                        prom::MetricType::Gauge);
    auto batch_waiting = family("torchpool_batch_waiting",
                                "Requests waiting to be sent in a batch, now (part of the queue "
                                "depth)",
                                prom::MetricType::Gauge);
    auto tasks = family("torchpool_tasks_total", "Tasks by outcome", prom::MetricType::Counter);
    auto deaths = family("torchpool_worker_deaths_total",
                         "Workers that died or were stopped by the pool, by cause",
                         prom::MetricType::Counter);
    auto restarts =
        family("torchpool_worker_restarts_total",
               "Worker processes started to replace one that exited", prom::MetricType::Counter);
    auto queue_wait =
        family("torchpool_queue_seconds", "Time a task waited in the pool's queue for a worker",
               prom::MetricType::Histogram);
    auto compute = family("torchpool_compute_seconds", "Time a task ran on its worker",
                          prom::MetricType::Histogram);
    auto start =
        family("torchpool_worker_start_seconds",
               "Time from a worker process's start to its readiness", prom::MetricType::Histogram);
    auto shared = family("torchpool_shared_memory_bytes",
                         "Shared memory for tensors, now: the input memory's size, what tensors "
                         "use of it, and workers' results that requests still hold",
                         prom::MetricType::Gauge);
    auto tensors = family("torchpool_tensors_total",
                          "Tensors sent to workers, by how: inline in the message or through "
                          "shared memory; inline_memory_full counts the inline ones that were "
                          "large but found the input memory full",
                          prom::MetricType::Counter);
    for (const auto& m : models_) {
        const pool_stats s = m.workers->stats();
        for (const auto& [state, n] : {std::pair{"starting", s.workers_starting},
                                       {"idle", s.workers_idle},
                                       {"busy", s.workers_busy},
                                       {"stopping", s.workers_stopping},
                                       {"backoff", s.workers_backoff},
                                       {"waiting", s.workers_waiting}}) {
            add(workers, m.name, static_cast<double>(n), {{"state", state}});
        }
        const std::size_t batching = m.waiting_for_batch ? m.waiting_for_batch() : 0;
        add(queue, m.name, static_cast<double>(s.queue_depth + s.waiting_for_room + batching));
        add(batch_waiting, m.name, static_cast<double>(batching));
        for (const auto& [outcome, n] : {std::pair{"succeeded", s.succeeded},
                                         {"task_failed", s.task_failed},
                                         {"worker_died", s.worker_died},
                                         {"timeout", s.timed_out},
                                         {"protocol_error", s.protocol_errors},
                                         {"memory_limit", s.memory_limit},
                                         {"poison_task", s.poison_tasks},
                                         {"overloaded", s.overloaded},
                                         {"spawn_failed", s.spawn_failed},
                                         {"cancelled", s.cancelled}}) {
            add(tasks, m.name, static_cast<double>(n), {{"outcome", outcome}});
        }
        for (const auto& [cause, n] : {std::pair{"signal", s.deaths_by_signal},
                                       {"exit", s.deaths_by_exit},
                                       {"killed_by_pool", s.killed_by_pool},
                                       {"memory", s.memory_kills},
                                       {"unresponsive", s.unresponsive},
                                       {"failed_start", s.failed_starts}}) {
            add(deaths, m.name, static_cast<double>(n), {{"cause", cause}});
        }
        add(restarts, m.name, static_cast<double>(s.restarts));
        for (const auto& [use, n] : {std::pair{"input_size", s.input_memory_bytes},
                                     {"input_used", s.input_memory_used},
                                     {"input_peak", s.input_memory_peak},
                                     {"output_held", s.output_memory_held}}) {
            add(shared, m.name, static_cast<double>(n), {{"use", use}});
        }
        for (const auto& [how, n] : {std::pair{"inline", s.tensors_inline},
                                     {"shared", s.tensors_shared},
                                     {"inline_memory_full", s.input_memory_full}}) {
            add(tensors, m.name, static_cast<double>(n), {{"how", how}});
        }
        queue_wait.metric.push_back(histogram_of(s.queue_wait, m.name));
        compute.metric.push_back(histogram_of(s.run_time, m.name));
        start.metric.push_back(histogram_of(s.start_to_ready, m.name));
    }
    for (auto* f : {&workers, &queue, &batch_waiting, &tasks, &deaths, &restarts, &queue_wait,
                    &compute, &start, &shared, &tensors}) {
        families.push_back(std::move(*f));
    }
    if (connections_) {
        add_connections(families, connections_());
    }
    std::ostringstream out;
    prom::TextSerializer().Serialize(out, families);
    return out.str();
}

}  // namespace torchpool::serve
