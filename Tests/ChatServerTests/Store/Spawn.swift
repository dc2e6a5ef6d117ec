import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Child processes through posix_spawn and waitpid, with output to files. Foundation's `Process`
/// did not notice a child's exit here when a server the child started lives on (the wait never
/// returned), so the tests that start servers use this instead.
enum Spawn {
    /// Starts `path ARGUMENTS` with `environment`, standard output and error appended to `log`.
    static func start(_ path: String, _ arguments: [String], environment: [String: String], log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard result == 0 else { throw StringError("cannot start \(path): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Waits for `pid` to end; its exit code, or 128 + the signal that ended it.
    @discardableResult
    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Whether `pid` has ended (reaping it if so); its code like `wait`.
    static func ended(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return r < 0 ? -1 : nil }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Runs `path ARGUMENTS` to its end: exit code and output.
    static func run(_ path: String, _ arguments: [String]) throws -> (Int32, String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sarvam-spawn-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let pid = try start(path, arguments, environment: ProcessInfo.processInfo.environment, log: log)
        let code = wait(pid)
        return (code, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }
}
