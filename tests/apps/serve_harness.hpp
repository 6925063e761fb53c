// What the server's end-to-end tests drive it with: the real server as a child process on a
// free loopback port, curl, and a raw keep-alive connection for what curl cannot time.
#pragma once

#include <torchpool/task.hpp>

#include <boost/json.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace serve_test {

using torchpool::tensor;
namespace json = boost::json;

// The server, started with `args`, until it says where it listens (it does once its
// workers are ready).
class server_process {
public:
    explicit server_process(std::vector<std::string> args) {
        int out[2];
        REQUIRE(::pipe(out) == 0);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, out[1], 2);
        posix_spawn_file_actions_addclose(&actions, out[0]);
        std::vector<std::string> all = {TORCHPOOL_SERVE, "--port", "0"};
        if (std::find(args.begin(), args.end(), "--workers") == args.end()) {
            all.insert(all.end(), {"--workers", "2"});  // unless the test says how many
        }
        if (std::find(args.begin(), args.end(), "--http-threads") == args.end()) {
            // HTTP on threads of its own, beside the supervising one (the default leaves it
            // on that thread when the workers take every core, as on a 2-core machine).
            all.insert(all.end(), {"--http-threads", "2"});
        }
        all.insert(all.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : all) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        REQUIRE(::posix_spawn(&pid_, TORCHPOOL_SERVE, &actions, nullptr, argv.data(), environ) ==
                0);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        out_ = out[0];
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        std::string text;
        while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
            pollfd p{out_, POLLIN, 0};
            if (::poll(&p, 1, 1000) <= 0) {
                continue;
            }
            char buf[4096];
            const ssize_t n = ::read(out_, buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            text.append(buf, static_cast<std::size_t>(n));
            const auto at = text.find("listening on http://127.0.0.1:");
            if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
                port_ = std::stoi(text.substr(at + 30));
            }
        }
        INFO("server output: " << text);
        REQUIRE(port_ > 0);
        output_ = text;
    }
    ~server_process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::close(out_);
    }
    int port() const { return port_; }
    pid_t pid() const { return pid_; }
    /// Reads what the server prints (stdout and stderr) until `text` appears, for at most a
    /// minute; true if it did.
    bool wait_for(const std::string& text) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (output_.find(text) == std::string::npos) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            pollfd p{out_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
                return false;
            }
            char buf[4096];
            const ssize_t n = ::read(out_, buf, sizeof buf);
            if (n <= 0) {
                return false;
            }
            output_.append(buf, static_cast<std::size_t>(n));
        }
        return true;
    }
    std::string url(const std::string& path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    const std::string& output() const { return output_; }
    /// SIGTERM, then its exit status (it must exit within a minute); what it printed
    /// meanwhile is added to output().
    int terminate() {
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
        REQUIRE(pidfd >= 0);
        ::kill(pid_, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        for (bool exited = false; !exited;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            REQUIRE(left.count() > 0);
            pollfd p[2] = {{pidfd, POLLIN, 0}, {out_, POLLIN, 0}};
            ::poll(p, 2, static_cast<int>(left.count()));
            char buf[4096];
            if (p[1].revents & POLLIN) {
                const ssize_t n = ::read(out_, buf, sizeof buf);
                output_.append(buf, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
            } else if (p[1].revents & POLLHUP) {
                p[1].fd = -1;  // no writer left: only the exit is awaited
                ::poll(p, 1, static_cast<int>(left.count()));
            }
            exited = (p[0].revents & POLLIN) != 0;
        }
        int status = 0;
        ::waitpid(pid_, &status, 0);  // it has exited: at once
        ::close(pidfd);
        pid_ = 0;
        return status;
    }

private:
    pid_t pid_ = 0;
    int out_ = -1;
    int port_ = 0;
    std::string output_;
};

struct http_reply {
    long status = 0;
    std::string body;
};

// One request with curl, the body from a file (bodies of megabytes do not fit a command line).
inline http_reply curl(const std::string& method, const std::string& url,
                       const std::string& body = {}) {
    const auto dir = std::filesystem::temp_directory_path();
    const auto in = dir / ("torchpool-serve-test-in-" + std::to_string(::getpid()));
    const auto out = dir / ("torchpool-serve-test-out-" + std::to_string(::getpid()));
    std::ofstream(in, std::ios::binary) << body;
    std::string command = "curl -s -o " + out.string() + " -w '%{http_code}' -X " + method;
    if (!body.empty()) {
        command += " -H 'Content-Type: application/json' --data-binary @" + in.string();
    }
    command += " '" + url + "'";
    std::FILE* p = ::popen(command.c_str(), "r");
    REQUIRE(p != nullptr);
    char code[16] = {};
    const std::size_t n = std::fread(code, 1, sizeof code - 1, p);
    REQUIRE(::pclose(p) == 0);
    http_reply r{std::strtol(std::string(code, n).c_str(), nullptr, 10), {}};
    std::stringstream text;
    text << std::ifstream(out).rdbuf();
    r.body = text.str();
    std::filesystem::remove(in);
    std::filesystem::remove(out);
    return r;
}

// Requests sent at once, each by its own curl process: (status, body) of each, in order.
inline std::vector<http_reply> curl_at_once(const std::string& url,
                                            const std::vector<std::string>& bodies) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("torchpool-serve-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string script;
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        const auto in = dir / ("in" + std::to_string(i));
        std::ofstream(in, std::ios::binary) << bodies[i];
        script += "curl -s -o " + (dir / ("out" + std::to_string(i))).string() +
                  " -w '%{http_code}' --data-binary @" + in.string() + " '" + url + "' > " +
                  (dir / ("code" + std::to_string(i))).string() + " & ";
    }
    script += "wait";
    REQUIRE(std::system(script.c_str()) == 0);
    std::vector<http_reply> replies;
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        std::stringstream code, body;
        code << std::ifstream(dir / ("code" + std::to_string(i))).rdbuf();
        body << std::ifstream(dir / ("out" + std::to_string(i))).rdbuf();
        replies.push_back({std::strtol(code.str().c_str(), nullptr, 10), body.str()});
    }
    std::filesystem::remove_all(dir);
    return replies;
}

// Polls the server's /metrics until it shows `text` (a state that lasts until the test
// changes it), for at most 60 s: false if it never did.
inline bool metrics_show(const server_process& server, const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
        if (curl("GET", server.url("/metrics")).body.find(text) != std::string::npos) {
            return true;
        }
    }
    return false;
}

inline std::string infer_body(const tensor& images, const std::string& id) {
    json::array data;
    const auto* p = reinterpret_cast<const float*>(images.data.data());
    for (std::size_t i = 0; i < images.data.size() / sizeof(float); ++i) {
        data.push_back(static_cast<double>(p[i]));
    }
    json::array shape;
    for (auto d : images.shape) {
        shape.push_back(d);
    }
    return json::serialize(
        json::object{{"id", id},
                     {"inputs", json::array{json::object{{"name", "images"},
                                                         {"datatype", "FP32"},
                                                         {"shape", std::move(shape)},
                                                         {"data", std::move(data)}}}}});
}

// A plain keep-alive HTTP/1.1 connection, for what curl cannot time: requests written by
// this thread, responses read whole.
class connection {
public:
    /// `receive_buffer`: the socket's receive buffer (SO_RCVBUF), small for a slow reader.
    explicit connection(int port, int receive_buffer = 0) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (receive_buffer > 0) {
            ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
        }
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_port = htons(static_cast<std::uint16_t>(port));
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
    }
    ~connection() { ::close(fd_); }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    int fd() const { return fd_; }
    /// Reads give up (receive() returns "") after `ms` without a byte; writes after `ms` blocked.
    void set_timeout(int ms) {
        timeval t{ms / 1000, (ms % 1000) * 1000};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
    }
    /// Writes the request; when send() returns, its bytes are in the server's socket.
    void send(const std::string& method, const std::string& path, const std::string& body = {}) {
        const std::string text =
            method + " " + path + " HTTP/1.1\r\nHost: test\r\n" +
            "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\n\r\n" + body;
        REQUIRE(::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(text.size()));
    }
    /// Writes `text` as it is (a partial request).
    void send_raw(const std::string& text) {
        REQUIRE(::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(text.size()));
    }
    /// The next response's status line and headers only (a response to HEAD, a 100 Continue).
    std::string receive_head() {
        for (;;) {
            if (const auto end = data_.find("\r\n\r\n"); end != std::string::npos) {
                std::string head = data_.substr(0, end + 4);
                data_.erase(0, end + 4);
                return head;
            }
            if (!read_more()) {
                return {};
            }
        }
    }
    /// The next response's status line and headers, and its body; "" at end of stream.
    std::string receive() {
        for (;;) {
            const auto end = data_.find("\r\n\r\n");
            if (end != std::string::npos) {
                const auto length_at = data_.find("Content-Length: ");
                const std::size_t length =
                    length_at < end ? std::stoul(data_.substr(length_at + 16)) : 0;
                if (data_.size() >= end + 4 + length) {
                    std::string whole = data_.substr(0, end + 4 + length);
                    data_.erase(0, end + 4 + length);
                    return whole;
                }
            }
            if (!read_more()) {
                return {};
            }
        }
    }

    /// Everything the server sends until it closes the connection.
    std::string read_to_end() {
        while (read_more()) {
        }
        return std::exchange(data_, {});
    }

private:
    // What the server sent next, appended; false at the end of the stream.
    bool read_more() {
        char buf[8192];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) {
            return false;
        }
        data_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    int fd_ = -1;
    std::string data_;
};

}  // namespace serve_test
