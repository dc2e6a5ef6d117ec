import Foundation
import Logging

/// A swift-log handler writing one JSON object per line: `time` (ISO 8601, UTC, milliseconds),
/// `level`, `label`, `message`, then the metadata as fields. Integers, floating-point numbers and
/// booleans given as `.stringConvertible` stay numbers and booleans, so `jq 'select(.status >= 500)'`
/// works; everything else is a string, nested metadata an object or an array.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: JSONLogOutput

    public init(label: String, output: JSONLogOutput = .standardError, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.output = output
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
        file: String, function: String, line: UInt
    ) {
        var fields = self.metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let explicit { fields.merge(explicit) { _, new in new } }
        var line = "{\"time\":\(Self.quoted(Self.timestamp(Date()))),\"level\":\"\(level.rawValue)\","
        line += "\"label\":\(Self.quoted(label)),\"message\":\(Self.quoted(message.description))"
        for key in fields.keys.sorted() where !["time", "level", "label", "message"].contains(key) {
            line += ",\(Self.quoted(key)):\(Self.json(fields[key]!))"
        }
        line += "}\n"
        output.write(line)
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): return quoted(s)
        case .stringConvertible(let v):
            switch v {
            case let b as Bool: return b ? "true" : "false"
            case let i as any BinaryInteger: return "\(i)"
            case let d as Double: return d.isFinite ? "\(d)" : quoted("\(d)")
            case let f as Float: return f.isFinite ? "\(f)" : quoted("\(f)")
            default: return quoted(v.description)
            }
        case .array(let items): return "[" + items.map(json).joined(separator: ",") + "]"
        case .dictionary(let d):
            return "{" + d.keys.sorted().map { "\(quoted($0)):\(json(d[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func quoted(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || (0x2028...0x2029).contains(scalar.value):
                out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func timestamp(_ date: Date) -> String {
        Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(date)
    }
}

/// Where `JSONLogHandler` writes: whole lines, one `write` each, under a lock, so lines from
/// concurrent requests never interleave.
public final class JSONLogOutput: @unchecked Sendable {
    private let lock = NSLock()
    private let handle: FileHandle

    public init(handle: FileHandle) { self.handle = handle }
    public static let standardError = JSONLogOutput(handle: .standardError)

    func write(_ line: String) {
        lock.withLock { handle.write(Data(line.utf8)) }
    }
}

/// How the server writes its log: `json` lines for machines (the default when standard error is
/// not a terminal), `text` for people at a terminal.
public enum LogFormat: String, Sendable, CaseIterable {
    case json, text

    public static var automatic: LogFormat { isatty(STDERR_FILENO) == 1 ? .text : .json }

    public func handler(label: String) -> any LogHandler {
        switch self {
        case .json: return JSONLogHandler(label: label)
        case .text: return StreamLogHandler.standardError(label: label)
        }
    }
}
