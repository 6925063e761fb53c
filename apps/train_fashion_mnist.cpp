// Trains the default model of torchpool's LibTorch worker: a compact classifier of
// Fashion-MNIST images (Debian's dataset-fashion-mnist), saved as a TorchScript file.
//
// The C++ frontend cannot script a torch::nn::Module, so the model is a torch::jit::Module
// from the start: parameters registered on it, its methods written in TorchScript with
// define(), trained with torch::optim through the module's own forward.
//
// This is the one file of the project that includes <torch/torch.h> (for torch::optim).
#include "fashion_mnist.hpp"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

namespace {

struct options {
    std::string data_dir = torchpool::apps::default_fashion_mnist_dir;
    std::string output;
    int epochs = 8;
    int batch = 128;
    int threads = 0;
    double min_accuracy = 0.87;
    std::uint64_t seed = 1;
};

void usage(std::FILE* to) {
    std::fprintf(to,
                 "usage: torchpool-train-fashion-mnist --output MODEL.pt [options]\n"
                 "\n"
                 "Trains a small classifier of Fashion-MNIST clothing images and saves it as a\n"
                 "TorchScript file, the default model of torchpool's LibTorch worker.\n"
                 "\n"
                 "  --output PATH        where to write the model (required)\n"
                 "  --data DIR           the dataset's gzip'd IDX files (default %s,\n"
                 "                       from the Debian package dataset-fashion-mnist)\n"
                 "  --epochs N           passes over the 60,000 training images (default 8)\n"
                 "  --threads N          LibTorch threads (default: every core)\n"
                 "  --min-accuracy X     fail, and write nothing, below this test accuracy\n"
                 "                       (default 0.87)\n"
                 "  --seed N             random seed (default 1)\n",
                 torchpool::apps::default_fashion_mnist_dir);
}

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "torchpool-train-fashion-mnist: %s needs a value\n",
                             arg.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        try {
            if (arg == "--output") {
                o.output = value();
            } else if (arg == "--data") {
                o.data_dir = value();
            } else if (arg == "--epochs") {
                o.epochs = std::stoi(value());
            } else if (arg == "--batch") {
                o.batch = std::stoi(value());
            } else if (arg == "--threads") {
                o.threads = std::stoi(value());
            } else if (arg == "--min-accuracy") {
                o.min_accuracy = std::stod(value());
            } else if (arg == "--seed") {
                o.seed = std::stoull(value());
            } else if (arg == "--help" || arg == "-h") {
                usage(stdout);
                std::exit(0);
            } else {
                std::fprintf(stderr, "torchpool-train-fashion-mnist: unknown option '%s'\n\n",
                             arg.c_str());
                usage(stderr);
                std::exit(2);
            }
        } catch (const std::logic_error&) {
            std::fprintf(stderr, "torchpool-train-fashion-mnist: %s: '%s' is not a number\n",
                         arg.c_str(), argv[i]);
            std::exit(2);
        }
    }
    if (o.output.empty()) {
        std::fprintf(stderr, "torchpool-train-fashion-mnist: --output is required\n\n");
        usage(stderr);
        std::exit(2);
    }
    if (o.epochs < 1 || o.batch < 1) {
        std::fprintf(stderr, "torchpool-train-fashion-mnist: --epochs and --batch must be >= 1\n");
        std::exit(2);
    }
    return o;
}

// Images as float32 [N, 1, 28, 28] in [0, 1], labels as int64 [N].
std::pair<torch::Tensor, torch::Tensor> to_tensors(const torchpool::apps::labelled_images& set) {
    const auto n = static_cast<std::int64_t>(set.count);
    auto images = torch::from_blob(const_cast<std::uint8_t*>(set.pixels.data()), {n, 1, 28, 28},
                                   torch::kUInt8)
                      .to(torch::kFloat32)
                      .div_(255.0);
    auto labels = torch::from_blob(const_cast<std::uint8_t*>(set.labels.data()), {n}, torch::kUInt8)
                      .to(torch::kInt64);
    return {images, labels};
}

// A fully connected network, 784 -> 256 -> 128 -> 10, with the input normalization built
// in, so that callers send plain pixel intensities in [0, 1]. Accepts [N, 1, 28, 28],
// [N, 28, 28] or [N, 784].
torch::jit::Module make_model() {
    torch::jit::Module m("FashionMnistClassifier");
    auto linear = [&](const std::string& name, std::int64_t in, std::int64_t out) {
        // The default initialization of torch.nn.Linear: uniform in +/- 1/sqrt(in).
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        m.register_parameter(name + "_weight", torch::rand({out, in}).mul_(2 * bound).sub_(bound),
                             false);
        m.register_parameter(name + "_bias", torch::rand({out}).mul_(2 * bound).sub_(bound), false);
    };
    linear("fc1", 784, 256);
    linear("fc2", 256, 128);
    linear("fc3", 128, 10);
    c10::List<std::string> names;
    for (const char* c : torchpool::apps::fashion_mnist_classes) {
        names.push_back(c);
    }
    m.register_attribute("class_names", c10::ListType::ofStrings(), names);
    m.define(R"TS(
def forward(self, images):
    x = images.reshape([images.size(0), 784])
    x = (x - 0.2860) / 0.3530
    x = torch.relu(torch.addmm(self.fc1_bias, x, self.fc1_weight.t()))
    x = torch.relu(torch.addmm(self.fc2_bias, x, self.fc2_weight.t()))
    return torch.addmm(self.fc3_bias, x, self.fc3_weight.t())

def predict(self, images):
    return torch.argmax(self.forward(images), 1)

def probabilities(self, images):
    return torch.softmax(self.forward(images), 1)
)TS");
    return m;
}

double accuracy(torch::jit::Module& model, const torch::Tensor& images,
                const torch::Tensor& labels) {
    torch::NoGradGuard no_grad;
    auto predicted = model.run_method("predict", images).toTensor();
    return predicted.eq(labels).sum().item<double>() / static_cast<double>(labels.size(0));
}

}  // namespace

int main(int argc, char** argv) {
    const options opt = parse(argc, argv);
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    torch::manual_seed(opt.seed);
    torch::set_num_threads(
        opt.threads > 0 ? opt.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

    torch::Tensor train_images, train_labels, test_images, test_labels;
    try {
        std::tie(train_images, train_labels) = to_tensors(
            torchpool::apps::read_fashion_mnist(opt.data_dir, torchpool::apps::split::train));
        std::tie(test_images, test_labels) = to_tensors(
            torchpool::apps::read_fashion_mnist(opt.data_dir, torchpool::apps::split::test));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-train-fashion-mnist: %s\n", e.what());
        return 1;
    }
    std::printf("training on %lld images, testing on %lld, %d LibTorch threads\n",
                static_cast<long long>(train_images.size(0)),
                static_cast<long long>(test_images.size(0)), torch::get_num_threads());

    auto model = make_model();
    std::vector<torch::Tensor> parameters;
    for (const auto& p : model.parameters()) {
        p.set_requires_grad(true);
        parameters.push_back(p);
    }
    torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(1e-3));
    const std::int64_t n = train_images.size(0);
    for (int epoch = 1; epoch <= opt.epochs; ++epoch) {
        if (epoch == opt.epochs - 1) {
            // A smaller step for the last two passes settles the weights.
            static_cast<torch::optim::AdamOptions&>(optimizer.param_groups()[0].options()).lr(3e-4);
        }
        model.train();
        auto order = torch::randperm(n, torch::kInt64);
        double loss_sum = 0;
        std::int64_t batches = 0;
        for (std::int64_t at = 0; at < n; at += opt.batch) {
            auto index = order.slice(0, at, std::min(n, at + opt.batch));
            auto x = train_images.index_select(0, index);
            auto y = train_labels.index_select(0, index);
            optimizer.zero_grad();
            auto logits = model.forward({x}).toTensor();
            auto loss = torch::nn::functional::cross_entropy(logits, y);
            loss.backward();
            optimizer.step();
            loss_sum += loss.item<double>();
            ++batches;
        }
        model.eval();
        const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
        std::printf("epoch %d/%d: training loss %.4f, test accuracy %.2f%% (%.1f s)\n", epoch,
                    opt.epochs, loss_sum / static_cast<double>(batches),
                    100.0 * accuracy(model, test_images, test_labels), elapsed);
        std::fflush(stdout);
    }

    for (const auto& p : model.parameters()) {
        p.set_requires_grad(false);
    }
    const double test_accuracy = accuracy(model, test_images, test_labels);
    const double seconds = std::chrono::duration<double>(clock::now() - start).count();
    if (test_accuracy < opt.min_accuracy) {
        std::fprintf(stderr,
                     "torchpool-train-fashion-mnist: test accuracy %.2f%% is below the required "
                     "%.2f%%; no model written\n",
                     100 * test_accuracy, 100 * opt.min_accuracy);
        return 1;
    }
    model.register_attribute("test_accuracy", c10::FloatType::get(), test_accuracy);
    const std::filesystem::path out(opt.output);
    const auto partial = out.string() + ".partial";
    try {
        if (out.has_parent_path()) {
            std::filesystem::create_directories(out.parent_path());
        }
        model.save(partial);
        // What a server needs to know to serve it (apps/serve/model_config.hpp): its method,
        // its input (images as float32 in [0, 1]) and its output (one logit per class).
        auto config = out;
        config.replace_extension(".json");
        {
            // The class names let a client ask for a classification ("9.27:9:Ankle boot").
            std::ofstream text(config.string() + ".partial");
            text
                << R"({"method": "forward",)" << '\n'
                << R"( "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],)"
                << '\n'
                << R"( "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10],)"
                << '\n'
                << R"(              "labels": [)";
            for (std::size_t c = 0; c < torchpool::apps::fashion_mnist_classes.size(); ++c) {
                text << (c ? ", " : "") << '"' << torchpool::apps::fashion_mnist_classes[c] << '"';
            }
            text << "]}]}\n";
        }
        std::filesystem::rename(config.string() + ".partial", config);
        // A request a person can send as it is (curl -d @...): the first test image.
        auto sample = out;
        sample.replace_extension(".sample.json");
        const auto first = test_images[0].contiguous();
        const auto* pixels = first.data_ptr<float>();
        std::ofstream request(sample);
        request << R"({"id": "Fashion-MNIST test image 0 (labelled )"
                << torchpool::apps::fashion_mnist_classes[test_labels[0].item<std::int64_t>()]
                << R"x()", "inputs": [{"name": "images", "datatype": "FP32", )x"
                << R"x("shape": [1, 1, 28, 28], "data": [)x";
        for (std::int64_t i = 0; i < first.numel(); ++i) {
            request << (i ? "," : "") << pixels[i];
        }
        // Asked as Triton's classification: the three likeliest classes, by name.
        request << R"x(]}], "outputs": [{"name": "logits", "parameters": {"classification": 3}}]})x"
                << '\n';
        std::filesystem::rename(partial, out);  // never leave a half-written model behind
    } catch (const std::exception& e) {
        std::fprintf(stderr, "torchpool-train-fashion-mnist: cannot write %s: %s\n",
                     opt.output.c_str(), e.what());
        return 1;
    }
    std::printf("test accuracy %.2f%% after %d epochs in %.1f s; saved %s\n", 100 * test_accuracy,
                opt.epochs, seconds, opt.output.c_str());
    return 0;
}
