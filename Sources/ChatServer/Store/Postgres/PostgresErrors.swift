import Foundation
import PostgresNIO

extension PostgresChatStore {
    /// What an error of PostgresNIO means to the server. A statement the server refused (a
    /// constraint, bad SQL) is a `StoreError` with PostgreSQL's message; anything else (refused or
    /// lost connections, a pool giving up, a deadline) means the database cannot be reached now.
    static func translate(_ error: any Error, endpoint: String) -> any Error {
        switch error {
        case is StoreError, is StoreUnavailableError, is StoreFullError:
            return error
        case let error as PostgresTransactionError:
            // What went wrong first: the statement in the transaction, else BEGIN or COMMIT.
            let cause = error.closureError ?? error.beginError ?? error.commitError ?? error.rollbackError
            return cause.map { translate($0, endpoint: endpoint) } ?? StoreError("a PostgreSQL transaction failed")
        case let error as PSQLError where error.code == .server:
            let state = error.serverInfo?[.sqlState] ?? "?"
            let message = error.serverInfo?[.message] ?? "no message"
            // Class 08: connection exceptions; 57P0x: the server is shutting down or starting.
            if state == "53100" {
                return StoreFullError("PostgreSQL at \(endpoint) has no disk space left: \(message)")
            }
            if state.hasPrefix("08") || state.hasPrefix("57P") {
                return StoreUnavailableError("PostgreSQL at \(endpoint) is not accepting work: \(message) (SQLSTATE \(state))")
            }
            return StoreError("PostgreSQL refused the statement: \(message) (SQLSTATE \(state))")
        case is PostgresDecodingError:
            return StoreError("a PostgreSQL row did not have the expected columns: \(String(reflecting: error))")
        case let error as PSQLError:
            let cause = error.underlying.map { ": \($0)" } ?? ""
            return StoreUnavailableError("PostgreSQL at \(endpoint) cannot be reached (\(error.code)\(cause))")
        default:
            return StoreUnavailableError("PostgreSQL at \(endpoint) cannot be reached: \(error)")
        }
    }

    /// The SQLSTATE of a refused statement (23505: a unique constraint), nil for other errors.
    static func sqlState(_ error: any Error) -> String? {
        guard let error = error as? PSQLError, error.code == .server else { return nil }
        return error.serverInfo?[.sqlState]
    }
}

/// Runs `operation`, or throws `StoreUnavailableError(message)` once `timeout` has passed. On the
/// deadline the operation is cancelled but not awaited: a connection stuck on a dead network must
/// not hold the request that waits for it.
func withDeadline<T: Sendable>(
    _ timeout: Duration, message: @escaping @Sendable () -> String, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let state = DeadlineState<T>()
    return try await withCheckedThrowingContinuation { continuation in
        state.continuation = continuation
        let timer = Task {
            try await Task.sleep(for: timeout)
            if state.resume(.failure(StoreUnavailableError(message()))) { state.expire() }
        }
        state.attach(
            Task {
                do { _ = state.resume(.success(try await operation())) } catch { _ = state.resume(.failure(error)) }
                timer.cancel()
            })
    }
}

/// The continuation of `withDeadline`, resumed by whichever of the work and the timer ends first.
private final class DeadlineState<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var _continuation: CheckedContinuation<T, any Error>?
    private var work: Task<Void, Never>?
    private var expired = false

    var continuation: CheckedContinuation<T, any Error>? {
        get { lock.withLock { _continuation } }
        set { lock.withLock { _continuation = newValue } }
    }

    /// Resumes the waiter unless it was resumed already; true when this call did.
    func resume(_ result: Result<T, any Error>) -> Bool {
        let waiting = lock.withLock { () -> CheckedContinuation<T, any Error>? in
            defer { _continuation = nil }
            return _continuation
        }
        waiting?.resume(with: result)
        return waiting != nil
    }

    func attach(_ task: Task<Void, Never>) {
        let cancelNow = lock.withLock { () -> Bool in
            work = task
            return expired
        }
        if cancelNow { task.cancel() }
    }

    /// The deadline passed: cancel the work (now, or when it is attached).
    func expire() {
        let task = lock.withLock { () -> Task<Void, Never>? in
            expired = true
            return work
        }
        task?.cancel()
    }
}
