import Foundation

/// The machine code of functions in the running test executable, so that tests can check which
/// instructions a kernel compiled to (auto-vectorization is fragile: see docs/kernels.md) without
/// asserting anything about speed. Uses binutils' objdump, a dependency of the Swift toolchain on Linux.
public enum Disassembly {
    public struct Function: Sendable {
        /// Mangled symbol name.
        public let name: String
        /// objdump lines of the body (`--no-show-raw-insn`, AT&T syntax).
        public let body: String
        /// Number of body lines containing `text` (an instruction mnemonic, a register, ...).
        public func count(_ text: String) -> Int {
            body.split(separator: "\n").filter { $0.contains(text) }.count
        }
        /// Number of instructions with this mnemonic operating on a register containing `register`.
        public func count(_ mnemonic: String, register: String) -> Int {
            body.split(separator: "\n").filter { $0.contains("\t\(mnemonic) ") && $0.contains(register) }.count
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Every function of this executable whose mangled name contains all of `fragments`.
    /// Throws when objdump cannot run, saying how to get it.
    public static func functions(containing fragments: [String]) throws -> [Function] {
        try all.get().filter { f in fragments.allSatisfy { f.name.contains($0) } }
    }

    /// The whole executable, disassembled once per test process.
    private static let all: Result<[Function], Failure> = Result { try disassembleSelf() }
        .mapError { $0 as? Failure ?? Failure(description: "\($0)") }

    private static func disassembleSelf() throws -> [Function] {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["objdump", "-d", "--no-show-raw-insn", executable]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            throw Failure(description: "could not run objdump (\(error)); install binutils (apt-get install binutils)")
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description:
                    "objdump -d \(executable) exited with status \(process.terminationStatus); is binutils installed (apt-get install binutils)?"
            )
        }
        // objdump prints each function as "<address> <symbol>:" followed by its instruction lines.
        var result: [Function] = []
        var name: Substring? = nil
        var lines: [Substring] = []
        func flush() {
            if let name { result.append(Function(name: String(name), body: lines.joined(separator: "\n"))) }
            lines.removeAll(keepingCapacity: true)
        }
        let text = String(decoding: data, as: UTF8.self)
        for line in text.split(separator: "\n") {
            if line.hasSuffix(">:"), let open = line.firstIndex(of: "<"), line.first != " " {
                flush()
                name = line[line.index(after: open)..<line.index(line.endIndex, offsetBy: -2)]
            } else if name != nil {
                lines.append(line)
            }
        }
        flush()
        return result
    }

    /// The single function whose mangled name contains all `fragments`; throws if none or several.
    public static func function(containing fragments: [String]) throws -> Function {
        let found = try functions(containing: fragments)
        guard found.count == 1 else {
            throw Failure(
                description:
                    "expected one function matching \(fragments) in the test executable, found \(found.count): \(found.map(\.name).prefix(5))"
            )
        }
        return found[0]
    }
}
