// `bench load`: many people chatting at once, and how many the box serves at the SLO. Starts
// `sarvam serve` itself on a free loopback port with a temporary data directory and a known admin
// key (or targets `--url` with `--key`), then per concurrency level C opens C streaming chats at a
// time and reports: ok / failed / 429 counts, aggregate generated tokens/s,
// time to first token p50/p95/p99 (and apart for short questions and for long pastes), inter-token
// latency p50/p95, the longest silence in any stream, the slowest 429, and the server's peak memory.
// The default mix is the SLO's: every 2nd conversation (`--long-every`) opens with a ~1,000-token
// paste, the others with a short question (~20 tokens), 128 tokens out each (`--max-tokens`).
//
// The SLO, per level: short prompts' time to first token p95 <= `--slo-ttft` (2 s), inter-token
// latency p95 <= `--slo-itl` (0.2 s), no stream silent for more than `--slo-silence` (2 s) after its
// first token, no failed request and no 429 (a user turned away). Each level says whether it held
// and which conditions failed; the last line is the streams the box holds at the SLO: the highest
// level that held with every lower level holding too. These targets only judge the results; the
// server's own (`sarvam serve --slo-ttft/--slo-itl`) are set with `--server-arg`.
//
// With `--turns N` each chat is a conversation: turn k resends the history (every earlier question
// and the streamed reply) with a short follow-up question, as a chat client does; the time to first
// token of those later turns is reported apart (it shows the prefix cache), and a later turn counts
// as long when its conversation opened with the paste. Every streamed reply is checked: HTTP 200,
// role first, one id, valid JSON chunks, a finish_reason, the usage chunk, `[DONE]` last. A reply
// that breaks any of these counts as failed, and so does a 429 without a Retry-After header.
//
// The client is a minimal blocking HTTP/1.1 one over a POSIX socket (one thread per stream), so the
// time of every byte is measured without a framework's buffering; it only talks to loopback.
import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum LoadBench {
    struct Options: ParsableArguments {
        @Flag(help: "One JSON object per level, one for the idle memory, and last the streams at the SLO, instead of the table.")
        var json = false
        @Option(help: ArgumentHelp("The weight file the started server loads.", valueName: "path"))
        var model = "weights/qwen2.5-coder-0.5b-instruct.sarvam"
        @Option(help: "The `model` field of each request (default: none, the server's default model).")
        var modelName: String?
        @Option(help: ArgumentHelp("The sarvam executable to start (default: the one beside this binary).", valueName: "path"))
        var sarvam: String?
        @Option(
            help: ArgumentHelp(
                "Target a running server instead of starting one (loopback only; needs --key).",
                valueName: "http://127.0.0.1:port"))
        var url: String?
        @Option(help: "An API key of the server given by --url.")
        var key: String?
        @Option(
            help: ArgumentHelp("Concurrency levels, comma-separated (default: 1,4,8,16,32).", valueName: "c1,c2,..."),
            transform: LoadBench.parseLevels)
        var levels: [Int] = [1, 4, 8, 16, 32]
        /// Requests per level; nil = max(8, 3 × C).
        @Option(parsing: .unconditional, help: "Requests per level (default: max(8, 3 × the level)).")
        var requests: Int?
        /// Seconds per level after which no new request starts.
        @Option(parsing: .unconditional, help: "Seconds per level after which no new request starts.")
        var seconds = 180.0
        @Option(parsing: .unconditional, help: "max_tokens of every request; 128 is the SLO mix.")
        var maxTokens = 128
        @Option(
            parsing: .unconditional,
            help:
                "Every K-th conversation opens with a ~1,000-token paste, the others with a short question; 2 is the SLO mix, half and half."
        )
        var longEvery = 2
        /// Requests per conversation (each later turn resends the history).
        @Option(parsing: .unconditional, help: "Requests per conversation; each later turn resends the history with a follow-up question.")
        var turns = 1
        @Option(
            name: .customLong("slo-ttft"), parsing: .unconditional,
            help: ArgumentHelp(
                "SLO: seconds to the first token of short prompts, p95 (judges the results; the server's own target is --server-arg --slo-ttft).",
                valueName: "seconds"))
        var sloTTFT = 2.0
        @Option(
            name: .customLong("slo-itl"), parsing: .unconditional,
            help: ArgumentHelp("SLO: seconds between two tokens of a stream, p95.", valueName: "seconds"))
        var sloITL = 0.2
        @Option(
            name: .customLong("slo-silence"), parsing: .unconditional,
            help: ArgumentHelp("SLO: longest silence of a stream after its first token.", valueName: "seconds"))
        var sloSilence = 2.0
        @Option(parsing: .unconditional, help: "--threads of the started server.")
        var threads = 2
        /// nil: not passed, the server sizes itself from its measured step cost.
        @Option(parsing: .unconditional, help: "--max-sequences of the started server (default: not passed, the server's own).")
        var maxSequences: Int?
        /// nil: not passed, the server's own queue limit.
        @Option(parsing: .unconditional, help: "--queue-limit of the started server (default: not passed, the server's own).")
        var queueLimit: Int?
        @Option(
            name: .customLong("server-arg"), parsing: .unconditionalSingleValue,
            help: ArgumentHelp("One more argument for the started server (repeatable; may start with --).", valueName: "arg"))
        var serverArguments: [String] = []
        @Option(
            help: ArgumentHelp(
                "Have the started server write its per-step trace here and print each level's step profile (see `bench steps`).",
                valueName: "path"))
        var stepTrace: String?

        func validate() throws {
            let positive: [(String, Int?)] = [
                ("--requests", requests), ("--max-tokens", maxTokens), ("--long-every", longEvery),
                ("--turns", turns), ("--threads", threads), ("--max-sequences", maxSequences),
            ]
            for case let (name, value?) in positive where value < 1 {
                throw ValidationError("\(name): expected a positive integer, found \(value)")
            }
            let positiveSeconds = [("--seconds", seconds), ("--slo-ttft", sloTTFT), ("--slo-itl", sloITL), ("--slo-silence", sloSilence)]
            for (name, value) in positiveSeconds where !(value > 0 && value.isFinite) {
                throw ValidationError("\(name): expected a positive number of seconds, found \(value)")
            }
            if let queueLimit, queueLimit < 0 { throw ValidationError("--queue-limit: expected an integer >= 0, found \(queueLimit)") }
            if url != nil && key == nil { throw ValidationError("--url needs --key (an API key of that server)") }
            if url != nil && stepTrace != nil { throw ValidationError("--step-trace needs the server started here (not --url)") }
        }

        var slo: SLO { SLO(ttft: sloTTFT, itl: sloITL, silence: sloSilence) }
    }

    struct BenchError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func parseLevels(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let levels = parts.compactMap { Int($0) }.filter { $0 >= 1 }
        guard !levels.isEmpty, levels.count == parts.count else {
            throw BenchError("expected positive integers separated by commas (e.g. 1,4,8), found \(text)")
        }
        return levels
    }

    /// Host and port of a loopback URL (`http://127.0.0.1:8080`, `http://localhost:8080/`).
    static func parseLoopbackURL(_ text: String) throws -> (host: String, port: Int) {
        guard let url = URL(string: text), url.scheme == "http", let host = url.host else {
            throw BenchError("--url: expected http://127.0.0.1:PORT, found \(text)")
        }
        guard host == "127.0.0.1" || host == "localhost" else {
            throw BenchError("--url: only loopback targets are allowed (127.0.0.1 or localhost), found \(host)")
        }
        return ("127.0.0.1", url.port ?? 80)
    }

    // MARK: - Run

    static func run(_ o: Options) throws {
        var server: ServerProcess?
        let host: String, port: Int, key: String
        if let url = o.url {
            (host, port) = try parseLoopbackURL(url)
            key = o.key!
        } else {
            key = "sk-bench-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
            let started = try ServerProcess.start(sarvam: try sarvamPath(o.sarvam), model: o.model, key: key, options: o)
            server = started
            (host, port) = ("127.0.0.1", started.port)
        }
        defer { server?.stop() }
        let client = LoadClient(host: host, port: port, key: key)
        try client.waitUntilHealthy(timeout: 900, server: server)
        let memory = MemoryProbe(pid: server?.pid, client: client)
        let idleBefore = memory.sample()
        let slo = o.slo
        if !o.json {
            print(
                "bench load: http://\(host):\(port), levels \(o.levels), max_tokens \(o.maxTokens), every \(ordinal(o.longEvery)) conversation opens with ~1,000 tokens, \(o.turns) turn(s) per conversation"
            )
            print(
                "SLO: short-prompt ttft p95 <= \(seconds(slo.ttft)) s, itl p95 <= \(seconds(slo.itl)) s, no stream silent > \(seconds(slo.silence)) s, no failure, no 429"
            )
            print("idle server RSS: \(idleBefore.map { "\($0 >> 20) MiB" } ?? "unknown")")
            print(
                "    C  SLO     ok  fail   429    tok/s   ×C=1  ttft p50    p95    p99  short p50    p95  long p50    p95  itl p50    p95  max gap  429 max  prompt tok/s  peak RSS  later-turn ttft p50/p95  cached prompt"
            )
        }
        var single: Double?
        var verdicts: [(concurrency: Int, held: Bool)] = []
        var traceOffset = 0
        for level in o.levels {
            let result = runLevel(concurrency: level, options: o, client: client, memory: memory)
            let stepProfile = o.stepTrace.flatMap { levelSteps(trace: $0, from: &traceOffset) }
            let failures = result.sloFailures(slo)
            verdicts.append((level, failures.isEmpty))
            if level == 1 { single = result.tokensPerSecond }
            if o.json {
                print(result.jsonLine(slo: slo))
            } else {
                let ratio = single.map { $0 > 0 ? String(format: "%5.2f", result.tokensPerSecond / $0) : "  -  " } ?? "  -  "
                func right(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
                func pair(_ p: Percentiles, _ count: Int, width: Int) -> String {
                    right(count > 0 ? String(format: "%.2f %6.2f", p.p50, p.p95) : "-      -", width)
                }
                let later =
                    result.laterTurnCount > 0 ? String(format: "%.2f / %.2f", result.laterTurnTTFT.p50, result.laterTurnTTFT.p95) : "-"
                let cached =
                    result.promptTokens > 0
                    ? String(format: "%.0f%%", 100 * Double(result.cachedPromptTokens) / Double(result.promptTokens)) : "-"
                print(
                    String(
                        format: "%5d  %@ %6d %5d %5d %8.1f  %@  %8.2f %6.2f %6.2f  %@  %@  %7.3f %6.3f  %7.2f  %7.3f  %12.1f  %@  %@  %@",
                        level, failures.isEmpty ? "yes" : " no", result.ok, result.failed, result.rejected, result.tokensPerSecond, ratio,
                        result.ttft.p50, result.ttft.p95, result.ttft.p99,
                        pair(result.shortTTFT, result.shortCount, width: 16), pair(result.longTTFT, result.longCount, width: 15),
                        result.itl.p50, result.itl.p95, result.maxGap,
                        result.maxRejectSeconds, result.promptTokensPerSecond,
                        right(result.peakRSS.map { "\($0 >> 20) MiB" } ?? "-", 8), later, cached))
                if !failures.isEmpty { print("        SLO missed: " + failures.joined(separator: "; ")) }
                if !result.tiers.isEmpty {
                    print("        served by: " + result.tiers.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                }
                for e in result.errors.prefix(3) { print("        error: \(e)") }
            }
            if let stepProfile {
                let p = StepsBench.profile(stepProfile, itlTarget: slo.itl)
                if o.json {
                    print("{\"concurrency\":\(level),\"step_profile\":\(StepsBench.json(p))}")
                } else {
                    print(StepsBench.table(p, itlTarget: slo.itl).split(separator: "\n").map { "        " + $0 }.joined(separator: "\n"))
                }
            }
        }
        Thread.sleep(forTimeInterval: 2)
        let idleAfter = memory.sample()
        let streams = streamsAtSLO(verdicts)
        if o.json {
            let fields = [
                "idle_rss_before_bytes": idleBefore.map { "\($0)" } ?? "null", "idle_rss_after_bytes": idleAfter.map { "\($0)" } ?? "null",
            ]
            print("{" + fields.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}")
            print(streamsJSONLine(streams: streams, slo: slo))
        } else {
            print("idle server RSS after the run: \(idleAfter.map { "\($0 >> 20) MiB" } ?? "unknown")")
            print("streams at SLO: \(streams)")
        }
    }

    /// The steps the server traced since byte `offset` of its trace (the level just run), moving
    /// `offset` to the end. The engine writes the trace out when it goes idle, so this waits a moment.
    static func levelSteps(trace: String, from offset: inout Int) -> [StepsBench.Step]? {
        Thread.sleep(forTimeInterval: 0.5)
        guard let data = FileManager.default.contents(atPath: trace), data.count >= offset else { return nil }
        let text = String(decoding: data[offset...], as: UTF8.self)
        guard let end = text.lastIndex(of: "\n") else { return [] }
        offset += text[...end].utf8.count
        return try? StepsBench.parse(String(text[...end]))
    }

    /// "2nd", "4th", "21st": the header's "every K-th conversation".
    static func ordinal(_ k: Int) -> String {
        let suffix = (11...13).contains(k % 100) ? "th" : [1: "st", 2: "nd", 3: "rd"][k % 10] ?? "th"
        return "\(k)\(suffix)"
    }

    /// A target as written on the command line: 2 -> "2", 0.2 -> "0.2".
    static func seconds(_ x: Double) -> String { String(format: "%g", x) }

    // MARK: - The SLO

    /// Targets the results of a level are judged by (seconds).
    struct SLO: Equatable {
        /// Time to first token of short prompts, p95.
        var ttft = 2.0
        /// Inter-token latency, p95.
        var itl = 0.2
        /// Longest gap between two tokens of one stream.
        var silence = 2.0
    }

    /// The streams the box holds at the SLO: the highest level that held, counting only levels
    /// below which every measured level held too (0 when the lowest level missed). Levels in any
    /// order; a level measured twice holds only if both runs held.
    static func streamsAtSLO(_ verdicts: [(concurrency: Int, held: Bool)]) -> Int {
        let held = Dictionary(verdicts.map { ($0.concurrency, $0.held) }, uniquingKeysWith: { $0 && $1 })
        var streams = 0
        for level in held.keys.sorted() {
            guard held[level]! else { break }
            streams = level
        }
        return streams
    }

    /// A JSON array of strings.
    static func jsonArray(_ strings: [String]) -> String {
        (try? JSONSerialization.data(withJSONObject: strings)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
    }

    /// The run's last JSON line: `{"streams_at_slo": N, "slo": {...}}`.
    static func streamsJSONLine(streams: Int, slo: SLO) -> String {
        func number(_ x: Double) -> String { String(format: "%.4f", x) }
        return
            "{\"streams_at_slo\": \(streams), \"slo\": {\"ttft_s\": \(number(slo.ttft)), \"itl_s\": \(number(slo.itl)), \"silence_s\": \(number(slo.silence))}}"
    }

    static func sarvamPath(_ given: String?) throws -> String {
        if let given { return given }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let beside = me.deletingLastPathComponent().appendingPathComponent("sarvam").path
        guard FileManager.default.isExecutableFile(atPath: beside) else {
            throw BenchError(
                "no sarvam executable beside the bench binary (\(beside)); build it (swift build -c release) or pass --sarvam PATH")
        }
        return beside
    }

    // MARK: - One level

    struct Percentiles: Equatable {
        var p50 = 0.0, p95 = 0.0, p99 = 0.0
        init() {}
        init(_ values: [Double]) {
            p50 = percentile(values, 0.50)
            p95 = percentile(values, 0.95)
            p99 = percentile(values, 0.99)
        }
    }

    /// Nearest-rank percentile (0 for no values).
    static func percentile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    struct LevelResult {
        var concurrency = 0
        var ok = 0, failed = 0, rejected = 0
        var completionTokens = 0
        /// Prompt tokens of the successful replies (their usage chunks), and those served from the
        /// server's prefix cache.
        var promptTokens = 0
        var cachedPromptTokens = 0
        var seconds = 0.0
        var tokensPerSecond: Double { seconds > 0 ? Double(completionTokens) / seconds : 0 }
        var promptTokensPerSecond: Double { seconds > 0 ? Double(promptTokens) / seconds : 0 }
        /// The slowest 429 answer (they must come at once, not after a timeout).
        var maxRejectSeconds = 0.0
        var ttft = Percentiles()
        /// Time to first token of the successful short-question and long-paste requests, and how many
        /// of each there were.
        var shortTTFT = Percentiles(), longTTFT = Percentiles()
        var shortCount = 0, longCount = 0
        /// Time to first token of turns after the first (their prompts resend the history).
        var laterTurnTTFT = Percentiles()
        var laterTurnCount = 0
        var itl = Percentiles()
        var maxGap = 0.0
        var peakRSS: Int?
        var errors: [String] = []
        /// Successful requests by what served them (`X-Sarvam-Tier`), for `"model": "auto"`.
        var tiers: [String: Int] = [:]

        init() {}

        /// A level's numbers from its requests' outcomes (peak memory is set by the caller).
        init(concurrency: Int, seconds: Double, outcomes: [StreamOutcome]) {
            self.concurrency = concurrency
            self.seconds = seconds
            var ttfts: [Double] = [], shortTTFTs: [Double] = [], longTTFTs: [Double] = [], laterTTFTs: [Double] = []
            var gaps: [Double] = []
            for outcome in outcomes {
                switch outcome.status {
                case .ok:
                    ok += 1
                    completionTokens += outcome.completionTokens
                    promptTokens += outcome.promptTokens
                    cachedPromptTokens += outcome.cachedPromptTokens
                    if let tier = outcome.tier { tiers[tier, default: 0] += 1 }
                    if let t = outcome.timeToFirstToken {
                        ttfts.append(t)
                        if outcome.long { longTTFTs.append(t) } else { shortTTFTs.append(t) }
                        if outcome.turn > 0 { laterTTFTs.append(t) }
                    }
                    gaps += outcome.interTokenGaps
                    maxGap = max(maxGap, outcome.interTokenGaps.max() ?? 0)
                case .rejected:
                    rejected += 1
                    maxRejectSeconds = max(maxRejectSeconds, outcome.seconds)
                case .failed(let message):
                    failed += 1
                    errors.append(message)
                }
            }
            ttft = Percentiles(ttfts)
            shortTTFT = Percentiles(shortTTFTs)
            shortCount = shortTTFTs.count
            longTTFT = Percentiles(longTTFTs)
            longCount = longTTFTs.count
            laterTurnTTFT = Percentiles(laterTTFTs)
            laterTurnCount = laterTTFTs.count
            itl = Percentiles(gaps)
        }

        /// The SLO conditions this level missed, each with the measured value and the target; empty
        /// when it held. Without a short prompt's first token there is nothing to hold the time to
        /// first token against, so that condition counts as missed.
        func sloFailures(_ slo: SLO) -> [String] {
            var failures: [String] = []
            if shortCount == 0 {
                failures.append("short_ttft_p95 unknown: no short prompt got a first token")
            } else if shortTTFT.p95 > slo.ttft {
                failures.append(String(format: "short_ttft_p95 %.2f s > %@ s", shortTTFT.p95, LoadBench.seconds(slo.ttft)))
            }
            if itl.p95 > slo.itl {
                failures.append(String(format: "itl_p95 %.3f s > %@ s", itl.p95, LoadBench.seconds(slo.itl)))
            }
            if maxGap > slo.silence {
                failures.append(String(format: "max_gap %.2f s > %@ s", maxGap, LoadBench.seconds(slo.silence)))
            }
            if failed > 0 { failures.append("failed \(failed)") }
            if rejected > 0 { failures.append("rejected \(rejected)") }
            return failures
        }

        func jsonLine(slo: SLO) -> String {
            func number(_ x: Double) -> String { String(format: "%.4f", x) }
            let failures = sloFailures(slo)
            let fields: [(String, String)] = [
                ("concurrency", "\(concurrency)"), ("ok", "\(ok)"), ("failed", "\(failed)"), ("rejected_429", "\(rejected)"),
                ("completion_tokens", "\(completionTokens)"), ("prompt_tokens", "\(promptTokens)"),
                ("cached_prompt_tokens", "\(cachedPromptTokens)"), ("seconds", number(seconds)),
                ("tokens_per_s", number(tokensPerSecond)), ("prompt_tokens_per_s", number(promptTokensPerSecond)),
                ("ttft_p50_s", number(ttft.p50)), ("ttft_p95_s", number(ttft.p95)), ("ttft_p99_s", number(ttft.p99)),
                ("short_ok", "\(shortCount)"), ("short_ttft_p50_s", number(shortTTFT.p50)), ("short_ttft_p95_s", number(shortTTFT.p95)),
                ("long_ok", "\(longCount)"), ("long_ttft_p50_s", number(longTTFT.p50)), ("long_ttft_p95_s", number(longTTFT.p95)),
                ("later_turns", "\(laterTurnCount)"), ("later_turn_ttft_p50_s", number(laterTurnTTFT.p50)),
                ("later_turn_ttft_p95_s", number(laterTurnTTFT.p95)),
                ("itl_p50_s", number(itl.p50)), ("itl_p95_s", number(itl.p95)), ("max_gap_s", number(maxGap)),
                ("rejected_429_max_s", number(maxRejectSeconds)),
                ("peak_rss_bytes", peakRSS.map { "\($0)" } ?? "null"),
                ("slo_ok", failures.isEmpty ? "true" : "false"), ("slo_failed", LoadBench.jsonArray(failures)),
                ("tiers", "{" + tiers.sorted { $0.key < $1.key }.map { "\(LoadBench.jsonArray([$0.key]).dropFirst().dropLast()): \($0.value)" }
                    .joined(separator: ", ") + "}"),
            ]
            return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
        }
    }

    static func runLevel(concurrency: Int, options o: Options, client: LoadClient, memory: MemoryProbe) -> LevelResult {
        let total = o.requests ?? max(8, 3 * concurrency)
        let state = LevelState()
        let start = Date()
        let deadline = start.addingTimeInterval(o.seconds)
        let sampler = memory.startSampling()
        let group = DispatchGroup()
        for worker in 0..<concurrency {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                // One conversation after another; every turn takes one of the level's requests.
                var history: [[String: String]] = []
                var long = false
                while true {
                    let n: Int? = state.lock.withLock {
                        guard state.issued < total, Date() < deadline else { return nil }
                        state.issued += 1
                        return state.issued
                    }
                    guard let n else { return }
                    let turn = history.count / 2
                    // Every `longEvery`-th conversation opens with the ~1,000-token paste.
                    let conversation =
                        turn == 0
                        ? state.lock.withLock {
                            state.conversations += 1; return state.conversations
                        } : 0
                    if turn == 0 { long = conversation % o.longEvery == 0 }
                    let question =
                        turn == 0
                        // Distinct across levels too: a repeated prompt and seed would be a response-cache hit.
                        ? Prompts.make(long: long, seed: n * 7919 + worker + concurrency * 1_000_003)
                        : Prompts.followUps[(n + turn) % Prompts.followUps.count]
                    history.append(["role": "user", "content": question])
                    var outcome = client.streamChat(body: requestBody(messages: history, options: o, seed: n), timeout: 300)
                    outcome.turn = turn
                    outcome.long = long
                    state.lock.withLock { state.outcomes.append(outcome) }
                    if case .ok = outcome.status, turn + 1 < o.turns {
                        history.append(["role": "assistant", "content": outcome.reply])
                    } else {
                        history = []
                    }
                    if case .rejected(let retryAfter) = outcome.status {
                        Thread.sleep(forTimeInterval: min(Double(retryAfter), 1))
                    }
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        var result = LevelResult(
            concurrency: concurrency, seconds: Date().timeIntervalSince(start),
            outcomes: state.lock.withLock { state.outcomes })
        result.peakRSS = sampler.stop()
        return result
    }

    /// Shared by a level's worker threads, under `lock`.
    final class LevelState: @unchecked Sendable {
        let lock = NSLock()
        var issued = 0
        var conversations = 0
        var outcomes: [StreamOutcome] = []
    }

    static func requestBody(messages: [[String: String]], options o: Options, seed: Int) -> Data {
        var body: [String: Any] = [
            "messages": messages,
            "stream": true,
            "max_tokens": o.maxTokens,
            "seed": seed,
            "stream_options": ["include_usage": true],
        ]
        if let name = o.modelName { body["model"] = name }
        return (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
    }
}

// MARK: - Prompts

/// Realistic-looking prompts: short questions (~20 tokens) and a long pasted text (~1,000 tokens)
/// with a question after it. A seed varies them so no two long prompts share a long prefix.
enum Prompts {
    static let questions = [
        "Write a Swift function that reverses the words of a sentence, and explain it briefly.",
        "What is the difference between a struct and a class in Swift? Answer in two sentences.",
        "Give me three names for a small bakery that sells sourdough bread and coffee.",
        "Explain what a hash table is to a new programmer, with one short example.",
        "Write a haiku about debugging a race condition late at night.",
        "How do I read a file line by line in Python? Show the shortest correct code.",
    ]

    static let codeLines = [
        "func merge(_ a: [Int], _ b: [Int]) -> [Int] {",
        "    var result: [Int] = []; var i = 0, j = 0",
        "    while i < a.count && j < b.count { if a[i] <= b[j] { result.append(a[i]); i += 1 } else { result.append(b[j]); j += 1 } }",
        "    result.append(contentsOf: a[i...]); result.append(contentsOf: b[j...])",
        "    return result",
        "}",
        "struct Inventory { var items: [String: Int] = [:]; mutating func add(_ name: String, count: Int) { items[name, default: 0] += count } }",
        "// The cache keeps the most recently used entries and evicts the oldest when it is full.",
        "final class Cache<Key: Hashable, Value> { private var storage: [Key: Value] = [:]; private var order: [Key] = [] }",
    ]

    /// What a person asks next about the reply (later turns of a conversation).
    static let followUps = [
        "Thanks. Can you make that shorter?",
        "Could you explain the most important part in more detail?",
        "What would you change if the input were very large?",
        "Give one example of how I would use this.",
    ]

    static func make(long: Bool, seed: Int) -> String {
        if !long { return "(\(seed)) " + questions[seed % questions.count] }
        // ~1,000 tokens: 35 lines of code-like text (~27 tokens each with Qwen2.5's tokenizer; 60
        // lines measured 1,679 tokens).
        var text = "Request \(seed). Here is some code from our project:\n\n"
        for k in 0..<35 { text += codeLines[(seed + k * 5) % codeLines.count] + " // line \(k)\n" }
        text += "\nSummarize in two sentences what this code does and name one possible bug."
        return text
    }
}

// MARK: - Server process

/// A `sarvam serve` child on a free loopback port (port 0: the server reports the port it bound).
final class ServerProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let dataDirectory: URL
    let logFile: URL
    var pid: Int32 { process.processIdentifier }

    private init(process: Process, port: Int, dataDirectory: URL, logFile: URL) {
        self.process = process
        self.port = port
        self.dataDirectory = dataDirectory
        self.logFile = logFile
    }

    static func start(sarvam: String, model: String, key: String, options o: LoadBench.Options) throws -> ServerProcess {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let log = data.appendingPathComponent("server.log")
        // A free port chosen here (bind to port 0, read it back, release it): the server's own
        // "listening on" line may sit in its stdout buffer while stdout is a pipe.
        let port = try freeLoopbackPort()
        let process = try launch(
            sarvam: sarvam, arguments: arguments(port: port, dataDirectory: data.path, model: model, options: o), key: key, log: log)
        return ServerProcess(process: process, port: port, dataDirectory: data, logFile: log)
    }

    /// Runs `sarvam ARGUMENTS` with `key` as the admin key, its output appended to `log` (created
    /// empty first), logging at warning unless SARVAM_LOG_LEVEL says otherwise.
    static func launch(sarvam: String, arguments: [String], key: String, log: URL) throws -> Process {
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: sarvam)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SARVAM_ADMIN_KEY"] = key
        environment["SARVAM_LOG_LEVEL"] = environment["SARVAM_LOG_LEVEL"] ?? "warning"
        process.environment = environment
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// `sarvam serve`'s command line. Capacity and queue are passed only when given, so by default
    /// the bench measures the server's own; the bench's SLO options are not passed (the server's
    /// targets go through --server-arg).
    static func arguments(port: Int, dataDirectory: String, model: String, options o: LoadBench.Options) -> [String] {
        var arguments = [
            "serve", "--host", "127.0.0.1", "--port", "\(port)", "--data-dir", dataDirectory, "--model", model,
            "--threads", "\(o.threads)",
        ]
        if let n = o.maxSequences { arguments += ["--max-sequences", "\(n)"] }
        if let n = o.queueLimit { arguments += ["--queue-limit", "\(n)"] }
        if let path = o.stepTrace { arguments += ["--step-trace", URL(fileURLWithPath: path).path] }
        return arguments + o.serverArguments
    }

    /// A port of 127.0.0.1 that was free a moment ago.
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoadBench.BenchError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        guard let port = bindLoopback(fd) else { throw LoadBench.BenchError("could not find a free loopback port: errno \(errno)") }
        return port
    }

    /// Binds `fd` to 127.0.0.1 on a port the system picks; returns that port (nil on failure).
    static func bindLoopback(_ fd: Int32) -> Int? {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    func stop() {
        if process.isRunning {
            process.interrupt()  // SIGINT: the graceful path
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
            if process.isRunning { process.terminate() }
        }
        try? FileManager.default.removeItem(at: dataDirectory)
    }
}

// MARK: - Memory of the server

/// The server's resident memory: from /proc/PID/status when we started it, else from its /metrics.
final class MemoryProbe: @unchecked Sendable {
    let pid: Int32?
    let client: LoadClient

    init(pid: Int32?, client: LoadClient) {
        self.pid = pid
        self.client = client
    }

    func sample() -> Int? {
        if let pid {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
            return Self.kilobytes(text, field: "VmRSS")
        }
        guard let text = client.get(path: "/metrics") else { return nil }
        return Self.metric(text, name: "sarvam_process_resident_memory_bytes").map { Int($0) }
    }

    static func kilobytes(_ status: String, field: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// The value of an unlabelled sample `name value` in Prometheus text.
    static func metric(_ text: String, name: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ")[1])
        }
        return nil
    }

    final class Sampling: @unchecked Sendable {
        private let lock = NSLock()
        private var peak: Int?
        private var done = false
        func record(_ v: Int?) { lock.withLock { if let v { peak = max(peak ?? 0, v) } } }
        var isDone: Bool { lock.withLock { done } }
        func stop() -> Int? {
            lock.withLock {
                done = true; return peak
            }
        }
    }

    /// Samples every 200 ms (every second through /metrics) until `stop()`; returns the peak.
    func startSampling() -> Sampling {
        let s = Sampling()
        let interval = pid != nil ? 0.2 : 1.0
        let thread = Thread { [self] in
            while !s.isDone {
                s.record(sample())
                Thread.sleep(forTimeInterval: interval)
            }
        }
        thread.start()
        return s
    }
}

// MARK: - HTTP client

/// How one streamed chat went.
struct StreamOutcome {
    enum Status: Equatable { case ok, rejected(retryAfter: Int), failed(String) }
    var status: Status
    var timeToFirstToken: Double?
    /// Seconds between consecutive content deltas.
    var interTokenGaps: [Double] = []
    var completionTokens = 0
    var promptTokens = 0
    var cachedPromptTokens = 0
    /// From sending the request to the end of the response.
    var seconds = 0.0
    /// The streamed reply text (the next turn resends it).
    var reply = ""
    /// 0 for a conversation's first request.
    var turn = 0
    /// The conversation opened with the ~1,000-token paste (else with a short question).
    var long = false
    /// What served a `"model": "auto"` request (`X-Sarvam-Tier`: light, heavy, an overflow upstream).
    var tier: String?
}

final class LoadClient: @unchecked Sendable {
    let host: String
    let port: Int
    let key: String

    init(host: String, port: Int, key: String) {
        self.host = host
        self.port = port
        self.key = key
    }

    func waitUntilHealthy(timeout: Double, server: ServerProcess?) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let server, !server.process.isRunning {
                let log = (try? String(contentsOf: server.logFile, encoding: .utf8)) ?? ""
                throw LoadBench.BenchError("sarvam serve exited (status \(server.process.terminationStatus)):\n\(log.suffix(2000))")
            }
            if let (status, _) = try? request(method: "GET", path: "/health", body: nil, timeout: 5), status == 200 { return }
            Thread.sleep(forTimeInterval: 0.5)
        }
        throw LoadBench.BenchError("the server at \(host):\(port) did not report healthy within \(Int(timeout)) s")
    }

    /// A whole small response (health, metrics); nil on any failure.
    func get(path: String) -> String? {
        guard let (status, body) = try? request(method: "GET", path: path, body: nil, timeout: 10), status == 200 else { return nil }
        return String(decoding: body, as: UTF8.self)
    }

    private func request(method: String, path: String, body: Data?, timeout: Double) throws -> (Int, [UInt8]) {
        let connection = try SocketConnection(host: host, port: port, timeout: timeout)
        try connection.send(Array(HTTPRequestWriter.make(method: method, path: path, host: "\(host):\(port)", key: key, body: body)))
        var reader = HTTPResponseReader()
        var body: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while !reader.isComplete {
            let n = try connection.receive(&buffer)
            if n == 0 { reader.close(); break }
            body += try reader.feed(buffer[0..<n])
        }
        return (reader.head?.status ?? 0, body)
    }

    /// POSTs a streaming chat completion and measures it event by event.
    func streamChat(body: Data, timeout: Double) -> StreamOutcome {
        let start = Date()
        do {
            let connection = try SocketConnection(host: host, port: port, timeout: timeout)
            try connection.send(
                Array(
                    HTTPRequestWriter.make(
                        method: "POST", path: "/v1/chat/completions", host: "\(host):\(port)",
                        key: key, body: body, accept: "text/event-stream")))
            var reader = HTTPResponseReader()
            var events = SSEParser()
            var check = ChatStreamChecker()
            var lastToken: Date?
            var outcome = StreamOutcome(status: .ok)
            var buffer = [UInt8](repeating: 0, count: 16384)
            var errorBody: [UInt8] = []
            while !reader.isComplete {
                let n = try connection.receive(&buffer)
                if n == 0 { reader.close(); break }
                let bytes = try reader.feed(buffer[0..<n])
                guard let head = reader.head else { continue }
                if head.status != 200 {
                    errorBody += bytes
                    continue
                }
                let now = Date()
                for event in events.feed(bytes) {
                    if try check.accept(event) {  // a content delta: one or more tokens
                        if let last = lastToken {
                            outcome.interTokenGaps.append(now.timeIntervalSince(last))
                        } else {
                            outcome.timeToFirstToken = now.timeIntervalSince(start)
                        }
                        lastToken = now
                    }
                }
            }
            guard let head = reader.head else { return StreamOutcome(status: .failed("no HTTP response")) }
            if head.status == 429 {
                guard let retryAfter = head.headers["retry-after"].flatMap({ Int($0) }), retryAfter >= 0 else {
                    return StreamOutcome(status: .failed("HTTP 429 without a Retry-After header (seconds)"))
                }
                var rejected = StreamOutcome(status: .rejected(retryAfter: retryAfter))
                rejected.seconds = Date().timeIntervalSince(start)
                return rejected
            }
            if head.status != 200 {
                return StreamOutcome(status: .failed("HTTP \(head.status): \(String(decoding: errorBody.prefix(300), as: UTF8.self))"))
            }
            try check.finish()
            outcome.tier = head.headers["x-sarvam-tier"]
            outcome.completionTokens = check.completionTokens
            outcome.promptTokens = check.promptTokens
            outcome.cachedPromptTokens = check.cachedPromptTokens
            outcome.reply = check.text
            outcome.seconds = Date().timeIntervalSince(start)
            return outcome
        } catch {
            return StreamOutcome(status: .failed("\(error)"))
        }
    }
}

enum HTTPRequestWriter {
    static func make(method: String, path: String, host: String, key: String, body: Data?, accept: String = "*/*") -> Data {
        var head =
            "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nAuthorization: Bearer \(key)\r\nAccept: \(accept)\r\nConnection: close\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        var data = Data(head.utf8)
        if let body { data.append(body) }
        return data
    }
}

/// A blocking TCP connection to an IPv4 loopback address with send/receive timeouts.
final class SocketConnection {
    private let fd: Int32

    init(host: String, port: Int, timeout: Double) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoadBench.BenchError("socket() failed: errno \(errno)") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw LoadBench.BenchError("not an IPv4 address: \(host)")
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let e = errno
            close(fd)
            throw LoadBench.BenchError("cannot connect to \(host):\(port): errno \(e)")
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw LoadBench.BenchError("send failed: errno \(errno)") }
            sent += n
        }
    }

    /// Bytes read into `buffer` (0 = the peer closed). Throws on timeout.
    func receive(_ buffer: inout [UInt8]) throws -> Int {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0 {
            let e = errno
            throw LoadBench.BenchError(e == EAGAIN || e == EWOULDBLOCK ? "timed out waiting for the server" : "recv failed: errno \(e)")
        }
        return n
    }
}

// MARK: - Parsing (tested)

/// Incremental HTTP/1.1 response reader: the head, then the body through chunked transfer
/// encoding, Content-Length, or until the connection closes. `feed` returns body bytes.
struct HTTPResponseReader {
    struct Head: Equatable {
        var status: Int
        /// Lowercased names.
        var headers: [String: String]
    }

    private(set) var head: Head?
    private(set) var isComplete = false
    private var pending: [UInt8] = []
    private var remainingLength: Int?  // Content-Length left
    private var chunked = false
    private var chunkLeft = 0  // bytes of the current chunk left (+2 for its CRLF handled separately)
    private var awaitingChunkCRLF = false

    mutating func close() { isComplete = true }

    mutating func feed<C: Collection>(_ bytes: C) throws -> [UInt8] where C.Element == UInt8 {
        pending += bytes
        var out: [UInt8] = []
        if head == nil {
            guard let end = Self.find([13, 10, 13, 10], in: pending) else { return [] }
            head = try Self.parseHead(Array(pending[..<end]))
            pending.removeFirst(end + 4)
            let h = head!
            chunked = h.headers["transfer-encoding"]?.lowercased().contains("chunked") ?? false
            if !chunked, let length = h.headers["content-length"].flatMap({ Int($0) }) { remainingLength = length }
            if !chunked && remainingLength == 0 { isComplete = true }
        }
        if chunked {
            while !isComplete {
                if awaitingChunkCRLF {
                    guard pending.count >= 2 else { break }
                    guard pending[0] == 13 && pending[1] == 10 else {
                        throw LoadBench.BenchError("chunked body: expected CRLF after a chunk")
                    }
                    pending.removeFirst(2)
                    awaitingChunkCRLF = false
                }
                if chunkLeft == 0 {
                    guard let lineEnd = Self.find([13, 10], in: pending) else { break }
                    let line = String(decoding: pending[..<lineEnd], as: UTF8.self)
                    let sizeText = line.split(separator: ";").first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? ""
                    guard let size = Int(sizeText, radix: 16) else {
                        throw LoadBench.BenchError("chunked body: bad chunk size \(line.debugDescription)")
                    }
                    pending.removeFirst(lineEnd + 2)
                    if size == 0 { isComplete = true; break }
                    chunkLeft = size
                }
                let take = min(chunkLeft, pending.count)
                if take == 0 { break }
                out += pending[..<take]
                pending.removeFirst(take)
                chunkLeft -= take
                if chunkLeft == 0 { awaitingChunkCRLF = true }
            }
        } else if let left = remainingLength {
            let take = min(left, pending.count)
            out += pending[..<take]
            pending.removeFirst(take)
            remainingLength = left - take
            if remainingLength == 0 { isComplete = true }
        } else {
            out = pending
            pending.removeAll()
        }
        return out
    }

    static func parseHead(_ bytes: [UInt8]) throws -> Head {
        let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw LoadBench.BenchError("expected an HTTP/1.x status line, found \(lines[0].debugDescription)")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Head(status: status, headers: headers)
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
        }
        return nil
    }
}

/// Server-sent events from a byte stream: `data:` lines joined per event, comments as pings.
struct SSEParser {
    enum Event: Equatable {
        case data(String)
        case comment(String)
    }

    private var line: [UInt8] = []
    private var data: [String] = []

    mutating func feed<C: Collection>(_ bytes: C) -> [Event] where C.Element == UInt8 {
        var events: [Event] = []
        for b in bytes {
            if b == 10 {
                if line.last == 13 { line.removeLast() }
                let text = String(decoding: line, as: UTF8.self)
                line.removeAll(keepingCapacity: true)
                if text.isEmpty {
                    if !data.isEmpty { events.append(.data(data.joined(separator: "\n"))) }
                    data.removeAll()
                } else if text.hasPrefix(":") {
                    events.append(.comment(String(text.dropFirst()).trimmingCharacters(in: .whitespaces)))
                } else if text.hasPrefix("data:") {
                    var value = text.dropFirst(5)
                    if value.first == " " { value = value.dropFirst() }
                    data.append(String(value))
                }
                // Other fields (event:, id:, retry:) are not used by the chat API.
            } else {
                line.append(b)
            }
        }
        return events
    }
}

/// Checks one streamed chat completion as OpenAI clients expect it.
struct ChatStreamChecker {
    private(set) var completionTokens = 0
    private(set) var promptTokens = 0
    /// Prompt tokens the server took from its prefix cache (usage.prompt_tokens_details.cached_tokens).
    private(set) var cachedPromptTokens = 0
    /// The reply's content deltas, joined.
    private(set) var text = ""
    private var id: String?
    private var sawRole = false
    private var finishReason: String?
    private var sawUsage = false
    private var done = false

    struct Violation: Error, CustomStringConvertible {
        let description: String
    }

    /// Accepts one event; true when it carried reply text (a token arrival).
    mutating func accept(_ event: SSEParser.Event) throws -> Bool {
        guard case .data(let payload) = event else { return false }  // `: ping`
        if done { throw Violation(description: "data after [DONE]") }
        if payload == "[DONE]" { done = true; return false }
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else {
            throw Violation(description: "a data event is not a JSON object: \(payload.prefix(120))")
        }
        if let error = object["error"] as? [String: Any] {
            throw Violation(description: "error event: \(error["message"] ?? "?")")
        }
        guard let eventId = object["id"] as? String, object["object"] as? String == "chat.completion.chunk" else {
            throw Violation(description: "a chunk without id or object chat.completion.chunk: \(payload.prefix(120))")
        }
        if let id, id != eventId { throw Violation(description: "chunk ids differ: \(id) then \(eventId)") }
        id = eventId
        if let usage = object["usage"] as? [String: Any], let n = usage["completion_tokens"] as? Int {
            sawUsage = true
            completionTokens = n
            promptTokens = usage["prompt_tokens"] as? Int ?? 0
            cachedPromptTokens = (usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
        }
        guard let choices = object["choices"] as? [[String: Any]], let choice = choices.first else { return false }
        let delta = choice["delta"] as? [String: Any] ?? [:]
        if delta["role"] as? String == "assistant" { sawRole = true }
        if let reason = choice["finish_reason"] as? String { finishReason = reason }
        guard let content = delta["content"] as? String, !content.isEmpty else { return false }
        if !sawRole { throw Violation(description: "content before the assistant role") }
        if finishReason != nil { throw Violation(description: "content after finish_reason") }
        text += content
        return true
    }

    func finish() throws {
        if !sawRole { throw Violation(description: "no chunk carried the assistant role") }
        if finishReason == nil { throw Violation(description: "no finish_reason (the stream ended early)") }
        if !sawUsage { throw Violation(description: "no usage chunk although stream_options.include_usage was set") }
        if !done { throw Violation(description: "no data: [DONE] at the end") }
    }
}
