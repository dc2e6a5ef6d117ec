import ArgumentParser
import ChatServer
import Foundation

/// The one reader of settings: a flag wins, else its environment variable (an empty one counts as
/// unset), else the default. A value that does not parse, or is out of range, is an error at
/// startup naming the flag and the variable, the value found and what is expected; no reader
/// silently falls back to the default.
struct Settings {
    var environment: [String: String]

    static var process: Settings { Settings(environment: ProcessInfo.processInfo.environment) }

    /// The variable's value, nil when unset or empty.
    func raw(_ variable: String) -> String? {
        environment[variable].flatMap { $0.isEmpty ? nil : $0 }
    }

    func string(_ flag: String?, _ variable: String) -> String? {
        flag ?? raw(variable)
    }

    /// An integer in `range` (when given), nil when neither the flag nor the variable is set.
    func int(_ flag: Int?, _ variable: String, in range: ClosedRange<Int>? = nil) throws -> Int? {
        let value: Int
        if let flag {
            value = flag
        } else if let text = raw(variable) {
            guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("\(variable): expected an integer, found \(text.debugDescription)")
            }
            value = parsed
        } else {
            return nil
        }
        if let range, !range.contains(value) {
            throw ValidationError("\(name(variable)): expected \(describe(range)), found \(value)")
        }
        return value
    }

    /// A finite number in `range` (when given), nil when unset.
    func double(_ flag: Double?, _ variable: String, in range: ClosedRange<Double>? = nil) throws -> Double? {
        let value: Double
        if let flag {
            value = flag
        } else if let text = raw(variable) {
            guard let parsed = Double(text.trimmingCharacters(in: .whitespaces)), parsed.isFinite else {
                throw ValidationError("\(variable): expected a number, found \(text.debugDescription)")
            }
            value = parsed
        } else {
            return nil
        }
        guard value.isFinite else { throw ValidationError("\(name(variable)): expected a finite number, found \(value)") }
        if let range, !range.contains(value) {
            throw ValidationError("\(name(variable)): expected a number in \(range.lowerBound)...\(range.upperBound), found \(value)")
        }
        return value
    }

    /// `HOST:PORT` (`[::1]:9090` for an IPv6 host), nil when unset.
    func hostAndPort(_ flag: String?, _ variable: String) throws -> (host: String, port: Int)? {
        guard let text = flag ?? raw(variable) else { return nil }
        let invalid = ValidationError("\(name(variable)): expected HOST:PORT (e.g. 127.0.0.1:9090), found \(text.debugDescription)")
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw invalid
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw invalid }
        return (host, port)
    }

    /// On or off: 1/0, true/false, yes/no, on/off (any case); nil when unset.
    func bool(_ flag: String?, _ variable: String) throws -> Bool? {
        guard let text = flag ?? raw(variable) else { return nil }
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off": return false
        default:
            throw ValidationError("\(name(variable)): expected on or off (1/0, true/false, yes/no), found \(text.debugDescription)")
        }
    }

    /// "--flag / VARIABLE" for messages: the flag that `VARIABLE` stands beside.
    private func name(_ variable: String) -> String {
        let flag = variable.replacingOccurrences(of: "SARVAM_", with: "").lowercased().replacingOccurrences(of: "_", with: "-")
        return "--\(flag) / \(variable)"
    }

    private func describe(_ range: ClosedRange<Int>) -> String {
        range.upperBound == Int.max ? "an integer >= \(range.lowerBound)" : "an integer in \(range.lowerBound)...\(range.upperBound)"
    }

    /// `--log-format` / SARVAM_LOG_FORMAT: json or text; unset picks by whether standard error is a terminal.
    func logFormat(_ flag: String?) throws -> LogFormat {
        guard let text = string(flag, "SARVAM_LOG_FORMAT") else { return .automatic }
        guard let format = LogFormat(rawValue: text.lowercased()) else {
            throw ValidationError("\(name("SARVAM_LOG_FORMAT")): expected json or text, found \(text.debugDescription)")
        }
        return format
    }
}
