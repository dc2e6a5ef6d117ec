import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Every API route: `Authorization: Bearer <key>` (API clients), else the sign-in cookie (the page),
/// whose unsafe requests must carry the CSRF header (`SessionCookie`). The key wins when both come.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let accounts: Accounts

    func handle(
        _ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        let user: User
        if let header = request.headers[.authorization] {
            user = try await keyUser(header, context: context)
        } else if let token = SessionCookie.token(in: request.headers) {
            if SessionCookie.isUnsafe(request.method) { try SessionCookie.requireCSRFHeader(request.headers) }
            let found = try await lookUp("session", context.logger) { try await accounts.authenticate(sessionToken: token) }
            guard let found else {
                throw APIError(
                    status: .unauthorized, message: "The session has ended (signed out, expired or password changed): sign in again.",
                    type: "invalid_request_error", code: "session_expired")
            }
            user = found.user
            context.sessionHash = found.session.hash
        } else {
            throw APIError.unauthorized("Missing API key or session. Send the header 'Authorization: Bearer <key>', or sign in.")
        }
        context.user = user
        context.stats.userId = user.id
        context.logger[metadataKey: "user_id"] = "\(user.userId)"
        return try await next(request, context)
    }

    private func keyUser(_ header: String, context: ServerContext) async throws -> User {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw APIError.unauthorized("The Authorization header must read 'Bearer <key>'.")
        }
        let key = parts[1].trimmingCharacters(in: .whitespaces)
        let user = try await lookUp("key", context.logger) { try await accounts.authenticate(key: key) }
        guard let user else { throw APIError.unauthorized("Incorrect API key provided.") }
        return user
    }

    /// Runs a store lookup: an unreachable store stays a 503 (RequestLogMiddleware), any other failure is a 500.
    private func lookUp<T>(_ what: String, _ logger: Logger, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreUnavailableError {
            throw error
        } catch {
            logger.error("\(what) lookup failed", metadata: ["error": "\(error)"])
            throw APIError.internalError("Could not check the \(what == "key" ? "API key" : "session").")
        }
    }
}
