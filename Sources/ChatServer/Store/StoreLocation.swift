import Foundation
import Logging

/// Where the chat store lives: a SQLite file (the default, in the data folder) or a PostgreSQL
/// database shared by several server instances.
public enum StoreLocation: Sendable, Equatable {
    case sqlite(path: String)
    case postgres(PostgresURL)

    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or `postgresql://`), or `sqlite:PATH`.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("postgres://") || trimmed.hasPrefix("postgresql://") {
            self = .postgres(try PostgresURL(parsing: trimmed))
        } else if trimmed.hasPrefix("sqlite:"), trimmed.count > "sqlite:".count {
            self = .sqlite(path: String(trimmed.dropFirst("sqlite:".count)))
        } else {
            throw StoreError(
                "expected postgres://USER@HOST:PORT/DB or sqlite:PATH, found \(text.debugDescription)")
        }
    }

    /// For logs and messages: never the password.
    public var description: String {
        switch self {
        case .sqlite(let path): return "SQLite \(path)"
        case .postgres(let url): return "PostgreSQL \(url.redacted)"
        }
    }
}

/// Opens the store at `location` and applies its migrations; throws `StoreError` (or
/// `StoreUnavailableError` for a database that cannot be reached) saying what went wrong.
public func openChatStore(_ location: StoreLocation, logger: Logger) async throws -> any ChatStore {
    switch location {
    case .sqlite(let path):
        return GRDBChatStore(database: try ChatDatabase(path: path))
    case .postgres(let url):
        return try await PostgresChatStore.open(url, logger: logger)
    }
}

/// A parsed `postgres://` URL. `sslmode` (disable, prefer, require) is the one query parameter
/// read; prefer is the default, as with libpq.
public struct PostgresURL: Sendable, Equatable {
    public enum TLSMode: String, Sendable { case disable, prefer, require }
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode

    public init(parsing text: String) throws {
        let expected = "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        guard let parts = URLComponents(string: text), parts.scheme == "postgres" || parts.scheme == "postgresql" else {
            throw StoreError("\(expected), found \(text.debugDescription)")
        }
        guard let host = parts.host, !host.isEmpty else { throw StoreError("\(expected): the host is missing") }
        guard let user = parts.user, !user.isEmpty else { throw StoreError("\(expected): the user is missing") }
        let database = String(parts.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StoreError("\(expected): the database name is missing or has a slash")
        }
        if let port = parts.port, !(1...65535).contains(port) { throw StoreError("\(expected): port \(port) is out of range") }
        var tls = TLSMode.prefer
        for item in parts.queryItems ?? [] {
            guard item.name == "sslmode", let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                throw StoreError("\(expected): unknown parameter \(item.name)=\(item.value ?? ""); only sslmode=disable|prefer|require is read")
            }
            tls = mode
        }
        self.host = host
        self.port = parts.port ?? 5432
        self.user = parts.percentEncodedUser.flatMap { $0.removingPercentEncoding } ?? user
        self.password = parts.percentEncodedPassword.flatMap { $0.removingPercentEncoding }
        self.database = database.removingPercentEncoding ?? database
        self.tls = tls
    }

    /// The URL without its password.
    public var redacted: String { "postgres://\(user)@\(host):\(port)/\(database)" }
}
