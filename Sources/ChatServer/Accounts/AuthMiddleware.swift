import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// `Authorization: Bearer <key>` on every API route.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = ServerContext
    let accounts: Accounts

    func handle(
        _ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            throw APIError.unauthorized("Missing API key. Send the header 'Authorization: Bearer <key>'.")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw APIError.unauthorized("The Authorization header must read 'Bearer <key>'.")
        }
        let key = parts[1].trimmingCharacters(in: .whitespaces)
        let user: User?
        do {
            user = try await accounts.authenticate(key: key)
        } catch let error as StoreUnavailableError {
            throw error  // 503 with Retry-After (RequestLogMiddleware)
        } catch {
            context.logger.error("key lookup failed", metadata: ["error": "\(error)"])
            throw APIError.internalError("Could not check the API key.")
        }
        guard let user else { throw APIError.unauthorized("Incorrect API key provided.") }
        var context = context
        context.user = user
        context.stats.userId = user.id
        context.logger[metadataKey: "user_id"] = "\(user.userId)"
        return try await next(request, context)
    }
}
