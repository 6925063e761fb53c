#include "batcher.hpp"

#include <torchpool/error.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>

#include <algorithm>
#include <cstring>

namespace torchpool::serve {

namespace asio = boost::asio;

std::int64_t rows_of(const std::vector<tensor>& inputs) {
    return inputs.empty() || inputs[0].shape.empty() ? 1 : inputs[0].shape[0];
}

bool batchable(const std::vector<tensor>& inputs) {
    if (inputs.empty()) {
        return false;
    }
    for (const auto& t : inputs) {
        if (t.shape.empty() || t.shape[0] < 1 || t.shape[0] != inputs[0].shape[0]) {
            return false;
        }
    }
    return true;
}

bool stackable(const std::vector<tensor>& a, const std::vector<tensor>& b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].type != b[i].type || a[i].shape.size() != b[i].shape.size() ||
            a[i].shape.empty() ||
            !std::equal(a[i].shape.begin() + 1, a[i].shape.end(), b[i].shape.begin() + 1)) {
            return false;
        }
    }
    return true;
}

std::vector<tensor> stack(const std::vector<const std::vector<tensor>*>& requests,
                          const input_memory& memory) {
    std::vector<tensor> out;
    for (std::size_t i = 0; i < requests.front()->size(); ++i) {
        const auto& first = (*requests.front())[i];
        auto shape = first.shape;
        std::size_t bytes = 0;
        for (std::size_t r = 1; r < requests.size(); ++r) {
            shape[0] += (*requests[r])[i].shape[0];
        }
        for (const auto* request : requests) {
            bytes += (*request)[i].bytes().size();
        }
        tensor stacked = placed_tensor(memory, first.type, std::move(shape), bytes);
        auto into = stacked.writable_bytes();
        std::size_t at = 0;
        for (const auto* request : requests) {
            const auto rows = (*request)[i].bytes();
            if (!rows.empty()) {
                std::memcpy(into.data() + at, rows.data(), rows.size());
                at += rows.size();
            }
        }
        out.push_back(std::move(stacked));
    }
    return out;
}

std::vector<std::vector<tensor>> split(const std::vector<tensor>& outputs,
                                       const std::vector<std::int64_t>& rows) {
    std::int64_t total = 0;
    for (const auto r : rows) {
        total += r;
    }
    if (total <= 0) {
        return {};
    }
    std::vector<std::vector<tensor>> parts(rows.size());
    for (const auto& out : outputs) {
        const std::size_t size = out.bytes().size();
        if (out.shape.empty() || out.shape[0] != total ||
            size % static_cast<std::size_t>(total) != 0) {
            return {};
        }
        const std::size_t row_bytes = size / static_cast<std::size_t>(total);
        std::size_t at = 0;
        for (std::size_t r = 0; r < rows.size(); ++r) {
            auto shape = out.shape;
            shape[0] = rows[r];
            const std::size_t bytes = row_bytes * static_cast<std::size_t>(rows[r]);
            if (out.shared) {
                // Rows of a worker's result in shared memory: views, not copies.
                parts[r].emplace_back(out.type, std::move(shape), out.shared.slice(at, bytes));
            } else {
                parts[r].emplace_back(out.type, std::move(shape), out.data.substr(at, bytes));
            }
            at += bytes;
        }
    }
    return parts;
}

input_memory input_memory_of(pool& workers) {
    return [&workers](dtype type, std::vector<std::int64_t> shape) {
        boost::system::error_code full;  // then an empty tensor
        return workers.allocate(type, std::move(shape), full);
    };
}

batcher::batcher(pool& workers, params p)
    : workers_(workers),
      params_(std::move(p)),
      policy_({.max_batch = params_.max_batch, .delay = params_.delay, .workers = params_.workers}),
      timer_(workers.get_executor()) {}

void batcher::finish(item& it, batch_result r) {
    if (!it.handler) {
        return;  // cancelled already
    }
    auto slot = asio::get_associated_cancellation_slot(*it.handler);
    if (slot.is_connected()) {
        slot.clear();
    }
    handler_type handler(std::move(*it.handler));
    it.handler.reset();
    std::move(handler)(std::move(r));
}

void batcher::cancel(const std::shared_ptr<item>& it) {
    switch (it->at) {
        case item::where::waiting:
            if (auto pos = std::find(waiting_.begin(), waiting_.end(), it); pos != waiting_.end()) {
                policy_.taken(rows_of(it->inputs), 1);
                waiting_.erase(pos);
            }
            break;
        case item::where::alone:
            it->cancel_task.emit(asio::cancellation_type::terminal);
            return;  // the pool completes the task with operation_aborted
        case item::where::in_batch:
            break;
    }
    finish(*it, {asio::error::operation_aborted, {}, "the client went away", 0});
}

void batcher::enqueue(std::vector<tensor> inputs, fault inject, handler_type handler) {
    auto it = std::make_shared<item>();
    it->inputs = std::move(inputs);
    it->inject = inject;
    it->handler.emplace(std::move(handler));
    it->arrived = std::chrono::steady_clock::now();
    if (auto slot = asio::get_associated_cancellation_slot(*it->handler); slot.is_connected()) {
        slot.assign([this, weak = std::weak_ptr<item>(it)](asio::cancellation_type) {
            if (auto alive = weak.lock()) {
                cancel(alive);
            }
        });
    }
    const auto rows = rows_of(it->inputs);
    if (!policy_.batches(rows, batchable(it->inputs))) {
        run_alone(std::move(it));  // no batching, not batchable, or a batch on its own
        return;
    }
    policy_.arrived(it->arrived, rows);
    waiting_.push_back(std::move(it));
    while (policy_.send_on_arrival()) {
        flush();
    }
    arm_timer();
}

void batcher::task_done() {
    policy_.task_done();
    if (policy_.send_on_task_done()) {
        flush();
    }
    arm_timer();  // a batch may be due, and there is room for it again
}

void batcher::arm_timer() {
    if (waiting_.empty()) {
        return;
    }
    const auto due = policy_.wake_at(waiting_.front()->arrived);
    if (!due || (armed_for_ && *armed_for_ <= *due)) {
        return;  // without room, the next task to complete sends what waits
    }
    armed_for_ = due;
    timer_.expires_at(*due);  // an earlier wait, if any, ends with operation_aborted
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec) {
            return;  // re-armed for an earlier time, or flush_all
        }
        armed_for_.reset();
        const auto now = std::chrono::steady_clock::now();
        while (!waiting_.empty() && policy_.send_on_timer(now, waiting_.front()->arrived)) {
            flush();
        }
        arm_timer();
    });
}

void batcher::flush_all() {
    while (!waiting_.empty()) {
        flush();
    }
    timer_.cancel();
    armed_for_.reset();
}

void batcher::flush() {
    std::vector<std::shared_ptr<item>> batch;
    std::int64_t rows = 0;
    const auto& first = waiting_.front()->inputs;
    // A task carries one fault: requests that ask for different ones never share a batch (a
    // crash asked for must not become another request's delay).
    fault inject = waiting_.front()->inject;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        const auto r = rows_of((*it)->inputs);
        const auto& asks = (*it)->inject;
        if (!batch.empty() &&
            (rows + r > static_cast<std::int64_t>(policy_.max_batch()) ||
             !stackable(first, (*it)->inputs) || (asks && inject && asks != inject))) {
            ++it;
            continue;
        }
        inject = inject ? inject : asks;
        rows += r;
        batch.push_back(std::move(*it));
        it = waiting_.erase(it);
    }
    policy_.taken(rows, batch.size());
    if (batch.size() == 1) {
        run_alone(std::move(batch.front()));
    } else {
        run_batch(std::move(batch), inject);
    }
}

namespace {

// The worker failed under the task, not the task itself: its requests may be run again.
bool worker_failed(const boost::system::error_code& ec) {
    return ec == errc::worker_died || ec == errc::memory_limit || ec == errc::protocol_error;
}

batch_result failed(const boost::system::error_code& ec, const response& r, std::size_t rows) {
    return {ec, {}, r.diagnostics.summary.empty() ? ec.message() : r.diagnostics.summary, rows};
}

}  // namespace

void batcher::run_alone(std::shared_ptr<item> one) {
    if (!one->handler) {
        return;  // cancelled while its batch ran
    }
    one->at = item::where::alone;
    const auto rows = static_cast<std::size_t>(rows_of(one->inputs));
    if (params_.on_send) {
        params_.on_send(rows);
    }
    auto req = request(params_.method, {}, one->inputs)
                   .with_timeout(params_.timeout)
                   .with_fault(one->inject);
    policy_.sent();
    workers_.async_submit(
        std::move(req),
        asio::bind_cancellation_slot(one->cancel_task.slot(),
                                     [this, one, rows](boost::system::error_code ec, response r) {
                                         // The worker is free: what waits goes to it first,
                                         // before the answer is written (see run_batch).
                                         task_done();
                                         if (ec) {
                                             finish(*one, failed(ec, r, rows));
                                         } else {
                                             finish(*one, {{}, std::move(r.tensors), {}, rows});
                                         }
                                     }));
}

void batcher::run_batch(std::vector<std::shared_ptr<item>> batch, fault inject) {
    std::vector<const std::vector<tensor>*> inputs;
    std::vector<std::int64_t> rows;
    for (const auto& b : batch) {
        b->at = item::where::in_batch;
        inputs.push_back(&b->inputs);
        rows.push_back(rows_of(b->inputs));
    }
    // Stacked straight into the pool's input memory: the rows' one copy.
    auto stacked = stack(inputs, input_memory_of(workers_));
    const auto total = static_cast<std::size_t>(rows_of(stacked));
    if (params_.on_send) {
        params_.on_send(total);
    }
    auto req = request(params_.method, {}, std::move(stacked))
                   .with_timeout(params_.timeout)
                   .with_fault(inject);
    policy_.sent();
    workers_.async_submit(std::move(req), [this, batch = std::move(batch), rows, total](
                                              boost::system::error_code ec, response r) {
        if (ec && worker_failed(ec)) {
            // One of them may be poison: each runs again alone, once, and fails alone.
            for (const auto& b : batch) {
                run_alone(b);
            }
            task_done();
            return;
        }
        // A worker is free: what waits goes now, before the answers. Finishing a request
        // resumes its session, which encodes and writes its response on this thread, and a
        // batch's worth of them kept the worker idle for as long.
        task_done();
        auto parts = ec ? std::vector<std::vector<tensor>>{} : split(r.tensors, rows);
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto& it = *batch[i];
            if (ec) {
                finish(it, failed(ec, r, total));
            } else if (parts.empty()) {
                finish(
                    it,
                    batch_result{
                        make_error_code(errc::task_failed),
                        {},
                        "the model's outputs do not keep the batch dimension (their first size is "
                        "not the number of rows sent), so a batch cannot be split; run with "
                        "--max-batch 1",
                        total});
            } else {
                finish(it, batch_result{{}, std::move(parts[i]), {}, total});
            }
        }
    });
}

}  // namespace torchpool::serve
