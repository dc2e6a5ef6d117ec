// `bench <suite> [options]`: Sarvam's throughput measurements. Each suite checks its results
// before timing, reports medians, and prints ratios measured in the same run (the machines are
// shared and noisy, so absolute numbers alone mean little).
//
// Exit codes: 0 done, 64 a bad command line (ArgumentParser prints what was wrong and the suite's
// usage), 1 a failed check or run (the error says which). Numeric options take the next argument
// as it is (`parsing: .unconditional`), so `--turns -1` is refused as a negative count, not as a
// missing value.
import ArgumentParser

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Sarvam's throughput measurements (results checked before timing, medians, same-run ratios).",
        subcommands: [Kernels.self, TokenizerSuite.self, Generate.self, Load.self, Steps.self, Memory.self])

    struct Kernels: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kernels",
            abstract: "Memory bandwidth, int8/int5/int4 matrix products, float products (own path vs OpenBLAS sgemm).")
        @OptionGroup var options: KernelsBench.Options
        func run() throws { try KernelsBench.run(options) }
    }

    struct TokenizerSuite: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tokenizer",
            abstract: "Encode and decode throughput of the default model's tokenizer on ~1 MB of mixed text, one thread.")
        @OptionGroup var options: TokenizerBench.Options
        func run() throws { try TokenizerBench.run(options) }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate",
            abstract: "Prefill, decode and batched decode tokens/s of the default model and its int4/int8 variants.")
        @OptionGroup var options: GenerateBench.Options
        func run() throws { try GenerateBench.run(options) }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "load",
            abstract:
                "Many concurrent streaming chats against `sarvam serve` (started here, or --url with --key): whether each level held the SLO, and the streams held at it."
        )
        @OptionGroup var options: LoadBench.Options
        func run() throws { try LoadBench.run(options) }
    }

    struct Steps: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "steps",
            abstract: "Where an engine's time went: the profile of a `sarvam serve --step-trace` file, by kind of step.")
        @OptionGroup var options: StepsBench.Options
        func run() throws { try StepsBench.run(options) }
    }

    struct Memory: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "memory",
            abstract:
                "Next-turn time to first token of a long conversation: hot in memory, from disk, after a restart, recomputed."
        )
        @OptionGroup var options: MemoryBench.Options
        func run() throws { try MemoryBench.run(options) }
    }
}
