// `bench memory`: the next-turn time to first token of a conversation with a long history, with the
// history's KV blocks hot in memory, loaded from disk (KV snapshots; the memory cache forced out),
// loaded from disk by a restarted server, and recomputed (snapshots off). Starts `sarvam serve`
// itself, once per case, over one data folder. Each case's figure is the median of the turns; every
// reply is checked (a streamed, non-empty answer; after the first turn, the history must have come
// from a cache except when recomputing).
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum MemoryBench {
    struct Options: ParsableArguments {
        @Flag(help: "One JSON object instead of the table.")
        var json = false
        @Option(parsing: .unconditional, help: "Tokens of conversation history before the measured turn (about).")
        var historyTokens = 3000
        @Option(help: ArgumentHelp("The weight file the started server loads.", valueName: "path"))
        var model = "weights/qwen2.5-coder-0.5b-instruct.sarvam"
        @Option(help: ArgumentHelp("The sarvam executable to start (default: the one beside this binary).", valueName: "path"))
        var sarvam: String?
        @Option(parsing: .unconditional, help: "Measured turns per case (the median is reported; at least 5).")
        var turns = 5
        @Option(parsing: .unconditional, help: "--threads of the started server.")
        var threads = 2

        func validate() throws {
            if historyTokens < 64 { throw ValidationError("--history-tokens: expected at least 64, found \(historyTokens)") }
            if turns < 5 { throw ValidationError("--turns: expected at least 5, found \(turns)") }
            if threads < 1 { throw ValidationError("--threads: expected a positive integer, found \(threads)") }
        }
    }

    /// A server over `data`, started with `arguments` after the common ones.
    final class Server {
        let process: Process
        let port: Int
        let log: URL

        init(sarvam: String, model: String, data: URL, key: String, threads: Int, arguments: [String]) throws {
            port = try ServerProcess.freeLoopbackPort()
            log = data.appendingPathComponent("server-\(port).log")
            let common = [
                "serve", "--host", "127.0.0.1", "--port", "\(port)", "--data-dir", data.path, "--model", model,
                "--threads", "\(threads)", "--response-cache", "off",
            ]
            process = try ServerProcess.launch(sarvam: sarvam, arguments: common + arguments, key: key, log: log)
        }

        /// SIGINT (the graceful path: the engine writes its snapshots), then waits.
        func stop() {
            guard process.isRunning else { return }
            process.interrupt()
            let deadline = Date().addingTimeInterval(60)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
            if process.isRunning { process.terminate() }
        }

        var residentBytes: Int? {
            guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else { return nil }
            return MemoryProbe.kilobytes(status, field: "VmRSS")
        }
    }

    /// Lines of a made-up log, about `tokens` tokens in all (~16 tokens a line for the Qwen2.5 tokenizer).
    static func history(tokens: Int) -> String {
        (0..<max(1, tokens / 16)).map { "entry \($0): sensor \($0 % 17) read \(($0 * 7919) % 1000) units" }.joined(separator: "\n")
    }

    static func body(history: String, turn: Int) -> Data {
        let messages: [[String: String]] = [
            ["role": "user", "content": "Here is a log:\n" + history],
            ["role": "assistant", "content": "I have read the log."],
            ["role": "user", "content": "Question \(turn): which sensor reads entry \(turn * 37)?"],
        ]
        let body: [String: Any] = [
            "messages": messages, "stream": true, "max_tokens": 4, "temperature": 0,
            "stream_options": ["include_usage": true],
        ]
        return (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
    }

    struct Case {
        var ttft: [Double] = []
        var cached: [Int] = []
        var median: Double { LoadBench.percentile(ttft, 0.5) }
    }

    static func run(_ o: Options) throws {
        let sarvam = try LoadBench.sarvamPath(o.sarvam)
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-memory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: data) }
        let key = "sk-bench-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let text = history(tokens: o.historyTokens)
        var promptTokens = 0
        var rss: [String: Int] = [:]

        /// Starts a server, sends an unmeasured first turn (0) when `warm`, then `turns` measured
        /// turns, and stops it.
        func measure(_ name: String, arguments: [String], warm: Bool, turns: Int, expectCached: Bool) throws -> Case {
            let server = try Server(sarvam: sarvam, model: o.model, data: data, key: key, threads: o.threads, arguments: arguments)
            defer { server.stop() }
            let client = LoadClient(host: "127.0.0.1", port: server.port, key: key)
            try client.waitUntilHealthy(timeout: 900, server: nil)
            rss[name + "_idle_start"] = server.residentBytes
            var result = Case()
            for turn in (warm ? 0 : 1)...turns {
                let outcome = client.streamChat(body: body(history: text, turn: turn), timeout: 900)
                guard outcome.status == .ok, let ttft = outcome.timeToFirstToken, !outcome.reply.isEmpty else {
                    throw LoadBench.BenchError("\(name), turn \(turn): \(outcome.status), no streamed reply")
                }
                promptTokens = outcome.promptTokens
                if turn == 0 { continue }
                if expectCached && outcome.cachedPromptTokens < outcome.promptTokens / 2 {
                    let cached = outcome.cachedPromptTokens
                    throw LoadBench.BenchError("\(name), turn \(turn): only \(cached) of \(outcome.promptTokens) prompt tokens were cached")
                }
                if !expectCached && outcome.cachedPromptTokens > 0 {
                    throw LoadBench.BenchError("\(name), turn \(turn): \(outcome.cachedPromptTokens) prompt tokens came from a cache")
                }
                result.ttft.append(ttft)
                result.cached.append(outcome.cachedPromptTokens)
                if !o.json { print("  \(name) turn \(turn): ttft \(String(format: "%.3f", ttft)) s, cached \(outcome.cachedPromptTokens)") }
            }
            Thread.sleep(forTimeInterval: 1)  // the engine goes idle and releases its pages
            rss[name + "_idle_end"] = server.residentBytes
            return result
        }

        let forcedOut = ["--prefix-cache-mb", "0", "--prefix-cache-idle-mb", "0"]
        let recompute = try measure(
            "recompute", arguments: ["--kv-snapshots", "off"] + forcedOut, warm: false, turns: o.turns, expectCached: false)
        let hot = try measure("hot", arguments: [], warm: true, turns: o.turns, expectCached: true)
        // The hot server's history is on disk now (written at its shutdown); this one keeps nothing
        // in memory, so every turn loads the history from disk.
        let disk = try measure("disk", arguments: forcedOut, warm: false, turns: o.turns, expectCached: true)
        let diskBytes = directoryBytes(data.appendingPathComponent("kv-snapshots"))
        // A new server, the disk snapshots written by the last one, only the first turn measured
        // per start (later turns would find the history in memory).
        var restart = Case()
        for _ in 0..<o.turns {
            let one = try measure("restart", arguments: [], warm: false, turns: 1, expectCached: true)
            restart.ttft.append(one.ttft[0])
            restart.cached.append(one.cached[0])
        }

        func f(_ x: Double) -> String { String(format: "%.4f", x) }
        if o.json {
            let rssFields = rss.sorted { $0.key < $1.key }.map { "\"rss_\($0.key)_bytes\":\($0.value)" }.joined(separator: ",")
            print(
                "{\"history_tokens\":\(promptTokens),\"turns\":\(o.turns),"
                    + "\"ttft_hot_s\":\(f(hot.median)),\"ttft_disk_s\":\(f(disk.median)),"
                    + "\"ttft_restart_s\":\(f(restart.median)),\"ttft_recompute_s\":\(f(recompute.median)),\"disk_bytes\":\(diskBytes),"
                    + "\(rssFields)}")
        } else {
            print("bench memory: \(promptTokens) prompt tokens, median of \(o.turns) turns")
            for (name, c) in [("hot", hot), ("disk", disk), ("restart", restart), ("recompute", recompute)] {
                print("  \(name.padding(toLength: 10, withPad: " ", startingAt: 0)) ttft p50 \(f(c.median)) s")
            }
            print("  disk bytes \(diskBytes); recompute / disk \(f(recompute.median / disk.median)); idle RSS \(rss)")
        }
        // Checked after the table so that the figures are seen either way.
        guard hot.median < recompute.median, disk.median < recompute.median else {
            throw LoadBench.BenchError("a cached turn was not faster than recomputing: the caches did not work")
        }
    }

    static func directoryBytes(_ url: URL) -> Int {
        let files = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey])
        var total = 0
        while let file = files?.nextObject() as? URL {
            total += (try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0
        }
        return total
    }
}
