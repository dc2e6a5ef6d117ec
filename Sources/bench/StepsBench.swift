// `bench steps TRACE`: where an engine's time went, from the per-step trace that
// `sarvam serve --step-trace FILE` writes (one JSON object per step). `bench load --step-trace`
// prints the same profile for each level. Steps are grouped by kind: decode only, mixed (decode
// rows beside prompt tokens), prompt only; for each the share of busy time, the step length, the
// rows it carried, and the cost per row. The cost model's error (actual / predicted) and the steps
// over the inter-token target show whether the planner sized steps right.
import ArgumentParser
import Foundation

enum StepsBench {
    struct Options: ParsableArguments {
        @Argument(help: ArgumentHelp("A trace written by `sarvam serve --step-trace`.", valueName: "trace.jsonl"))
        var trace: String
        @Option(
            name: .customLong("slo-itl"), parsing: .unconditional,
            help: ArgumentHelp("Steps longer than this are counted as over the inter-token target.", valueName: "seconds"))
        var sloITL = 0.2
        @Flag(help: "One JSON object instead of the table.")
        var json = false
    }

    /// One line of the trace (the fields of the server's `StepTraceRecord`).
    struct Step: Decodable, Equatable {
        var t: Double
        var seconds: Double
        var predicted: Double
        var decodeRows: Int
        var promptTokens: Int
        var promptRequests: Int
        var logitRows: Int
        var attended: Int
        var running: Int
        var waiting: Int
        var capacity: Int
        var admitted: Int
        var preempted: Int
        var speed: Double
        var stepTarget: Double?

        var kind: Kind {
            if promptTokens == 0 { return .decode }
            return decodeRows == 0 ? .prompt : .mixed
        }
    }

    enum Kind: String, CaseIterable { case decode, mixed, prompt }

    struct KindSummary: Equatable {
        var kind: Kind
        var steps = 0
        var seconds = 0.0
        var decodeRows = 0
        var promptTokens = 0
        var stepSeconds: [Double] = []
    }

    struct Profile: Equatable {
        var steps = 0
        /// Seconds inside steps, and from the first step's start to the last one's end.
        var busySeconds = 0.0
        var spanSeconds = 0.0
        var decodeTokens = 0
        var promptTokens = 0
        var kinds: [KindSummary] = Kind.allCases.map { KindSummary(kind: $0) }
        /// actual / predicted, per step.
        var errorRatios: [Double] = []
        var overTarget = 0
        var preempted = 0
        var admitted = 0
        var meanRunning = 0.0
        var meanWaiting = 0.0
        var meanCapacity = 0.0
        /// The planned step length beside decode rows, mean over the steps that had one.
        var meanStepTarget: Double?
    }

    /// Parses a trace; a line that is not a step is an error naming its number.
    static func parse(_ text: String) throws -> [Step] {
        let decoder = JSONDecoder()
        var steps: [Step] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            do {
                steps.append(try decoder.decode(Step.self, from: Data(line.utf8)))
            } catch {
                throw LoadBench.BenchError(
                    "step trace line \(i + 1): expected a step object (sarvam serve --step-trace), found \(line.prefix(80))")
            }
        }
        return steps
    }

    static func profile(_ steps: [Step], itlTarget: Double) -> Profile {
        var p = Profile()
        guard let first = steps.first, let last = steps.last else { return p }
        p.steps = steps.count
        p.spanSeconds = last.t + last.seconds - first.t
        for s in steps {
            p.busySeconds += s.seconds
            p.decodeTokens += s.decodeRows
            p.promptTokens += s.promptTokens
            let k = Kind.allCases.firstIndex(of: s.kind)!
            p.kinds[k].steps += 1
            p.kinds[k].seconds += s.seconds
            p.kinds[k].decodeRows += s.decodeRows
            p.kinds[k].promptTokens += s.promptTokens
            p.kinds[k].stepSeconds.append(s.seconds)
            if s.predicted > 0 { p.errorRatios.append(s.seconds / s.predicted) }
            if s.seconds > itlTarget && s.decodeRows > 0 { p.overTarget += 1 }
            p.preempted += s.preempted
            p.admitted += s.admitted
            p.meanRunning += Double(s.running)
            p.meanWaiting += Double(s.waiting)
            p.meanCapacity += Double(s.capacity)
            if let target = s.stepTarget { p.meanStepTarget = (p.meanStepTarget ?? 0) + target }
        }
        let targets = steps.filter { $0.stepTarget != nil }.count
        if targets > 0 { p.meanStepTarget! /= Double(targets) }
        let n = Double(steps.count)
        p.meanRunning /= n
        p.meanWaiting /= n
        p.meanCapacity /= n
        return p
    }

    static func table(_ p: Profile, itlTarget: Double) -> String {
        guard p.steps > 0 else { return "no engine steps" }
        func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
        var lines: [String] = []
        lines.append(
            "steps \(p.steps), busy \(f(p.busySeconds)) s of \(f(p.spanSeconds)) s (\(f(100 * p.busySeconds / max(p.spanSeconds, 1e-9), 0)) %), "
                + "decode \(f(Double(p.decodeTokens) / max(p.busySeconds, 1e-9))) tok/s, prompt \(f(Double(p.promptTokens) / max(p.busySeconds, 1e-9))) tok/s of busy time"
        )
        lines.append("kind     steps  time%  step ms p50/p95  decode rows  prompt tok  ms/row")
        for k in p.kinds where k.steps > 0 {
            let rows = k.decodeRows + k.promptTokens
            let sorted = k.stepSeconds.sorted()
            lines.append(
                k.kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
                    + String(
                        format: " %6d  %5.1f  %6.1f / %6.1f  %11.1f  %10.1f  %6.2f", k.steps, 100 * k.seconds / p.busySeconds,
                        1e3 * LoadBench.percentile(sorted, 0.5), 1e3 * LoadBench.percentile(sorted, 0.95),
                        Double(k.decodeRows) / Double(k.steps), Double(k.promptTokens) / Double(k.steps),
                        1e3 * k.seconds / Double(max(rows, 1))))
        }
        let ratios = p.errorRatios.sorted()
        lines.append(
            "actual/predicted p5/p50/p95 \(f(LoadBench.percentile(ratios, 0.05), 2))/\(f(LoadBench.percentile(ratios, 0.5), 2))/\(f(LoadBench.percentile(ratios, 0.95), 2)), "
                + "steps with decode rows over \(f(itlTarget, 3)) s: \(p.overTarget), admitted \(p.admitted), preempted \(p.preempted), "
                + "mean running \(f(p.meanRunning)) waiting \(f(p.meanWaiting)) capacity \(f(p.meanCapacity))"
                + (p.meanStepTarget.map { ", planned step \(f(1e3 * $0, 0)) ms" } ?? ""))
        return lines.joined(separator: "\n")
    }

    static func json(_ p: Profile) -> String {
        func number(_ x: Double) -> String { String(format: "%.4f", x) }
        let kinds = p.kinds.map { k in
            "\"\(k.kind.rawValue)\":{\"steps\":\(k.steps),\"seconds\":\(number(k.seconds)),\"decode_rows\":\(k.decodeRows),\"prompt_tokens\":\(k.promptTokens)}"
        }
        let ratios = p.errorRatios.sorted()
        return "{\"steps\":\(p.steps),\"busy_s\":\(number(p.busySeconds)),\"span_s\":\(number(p.spanSeconds)),"
            + "\"decode_tokens\":\(p.decodeTokens),\"prompt_tokens\":\(p.promptTokens),\"kinds\":{\(kinds.joined(separator: ","))},"
            + "\"predicted_error_p50\":\(number(LoadBench.percentile(ratios, 0.5))),\"over_target\":\(p.overTarget),"
            + "\"preempted\":\(p.preempted),\"admitted\":\(p.admitted)}"
    }

    static func run(_ o: Options) throws {
        guard let data = FileManager.default.contents(atPath: o.trace) else {
            throw LoadBench.BenchError("cannot read the step trace \(o.trace)")
        }
        let p = profile(try parse(String(decoding: data, as: UTF8.self)), itlTarget: o.sloITL)
        print(o.json ? json(p) : table(p, itlTarget: o.sloITL))
    }
}
