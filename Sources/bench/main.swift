// `bench <suite> [options]`: Sarvam's throughput measurements. Each suite checks its results
// before timing, reports medians, and prints ratios measured in the same run (the machines are
// shared and noisy, so absolute numbers alone mean little).
import Foundation

let suites: [String: (_ arguments: [String]) throws -> Void] = [
    "kernels": { try KernelsBench.run(arguments: $0) },
    "tokenizer": { try TokenizerBench.run(arguments: $0) },
    "generate": { try GenerateBench.run(arguments: $0) },
    "load": { try LoadBench.run(arguments: $0) },
]

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first, let suite = suites[name] else {
    let known = suites.keys.sorted().joined(separator: " | ")
    FileHandle.standardError.write("usage: bench <\(known)> [--json] [options]\n".data(using: .utf8)!)
    exit(2)
}
do {
    try suite(Array(arguments.dropFirst()))
} catch {
    FileHandle.standardError.write("bench \(name): \(error)\n".data(using: .utf8)!)
    exit(1)
}
