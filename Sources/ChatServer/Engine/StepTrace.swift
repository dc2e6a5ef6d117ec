// A per-step profile of the engine: one JSON line per step with what it did, what the cost model
// predicted and what it took. Off by default; `sarvam serve --step-trace FILE` turns it on and
// `bench steps FILE` summarises it (where the time goes at a given load).
import Foundation

/// One step, as written to the trace.
public struct StepTraceRecord: Codable, Sendable, Equatable {
    /// Seconds since the engine started, at the step's start.
    public var t: Double
    /// Seconds the step took, and what the cost model predicted for it before it ran.
    public var seconds: Double
    public var predicted: Double
    /// Decode rows, prompt tokens (and how many requests they came from), rows that produced logits.
    public var decodeRows: Int
    public var promptTokens: Int
    public var promptRequests: Int
    public var logitRows: Int
    /// Cached positions the step attended to in all.
    public var attended: Int
    /// After the step: requests running and waiting, and the capacity.
    public var running: Int
    public var waiting: Int
    public var capacity: Int
    /// Requests admitted, preempted (displaced or for lack of KV blocks) this step.
    public var admitted: Int
    public var preempted: Int
    /// The cost model's speed factor after learning from this step.
    public var speed: Double
    /// Seconds the next step is planned to last at most beside decode rows (nil: no latency target).
    public var stepTarget: Double?

    public init(
        t: Double, seconds: Double, predicted: Double, decodeRows: Int, promptTokens: Int, promptRequests: Int,
        logitRows: Int, attended: Int, running: Int, waiting: Int, capacity: Int, admitted: Int, preempted: Int,
        speed: Double, stepTarget: Double? = nil
    ) {
        self.t = t
        self.seconds = seconds
        self.predicted = predicted
        self.decodeRows = decodeRows
        self.promptTokens = promptTokens
        self.promptRequests = promptRequests
        self.logitRows = logitRows
        self.attended = attended
        self.running = running
        self.waiting = waiting
        self.capacity = capacity
        self.admitted = admitted
        self.preempted = preempted
        self.speed = speed
        self.stepTarget = stepTarget
    }
}

/// Appends `StepTraceRecord`s to a file, one JSON line each. Engine thread only.
public final class StepTrace: @unchecked Sendable {
    private let handle: FileHandle
    private let encoder = JSONEncoder()
    private var buffer = Data()
    public let path: String

    /// Creates (or truncates) the file; throws naming the path when it cannot be written.
    public init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil),
            let handle = FileHandle(forWritingAtPath: path)
        else {
            throw ChatEngineError.failed("cannot write the step trace \(path): check the folder exists and is writable")
        }
        self.handle = handle
        self.path = path
        encoder.outputFormatting = [.sortedKeys]
    }

    /// Buffers a record; the buffer goes to the file every 64 KiB and at `flush()`.
    public func append(_ record: StepTraceRecord) {
        guard let line = try? encoder.encode(record) else { return }
        buffer.append(line)
        buffer.append(0x0A)
        if buffer.count >= 1 << 16 { flush() }
    }

    /// Writes what is buffered (a write error ends tracing quietly: the trace is a diagnostic).
    public func flush() {
        guard !buffer.isEmpty else { return }
        try? handle.write(contentsOf: buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    deinit {
        flush()
        try? handle.close()
    }
}
