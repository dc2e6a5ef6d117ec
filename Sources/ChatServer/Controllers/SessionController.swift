import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Signing in with a user name and password, signing out, and changing one's password.
///
///   POST   /api/session       {"name", "password"} → the session cookie (no key needed)
///   DELETE /api/session       ends the cookie's session and clears the cookie
///   POST   /api/me/password   {"current_password", "new_password"}: ends the user's other sessions
///
/// Sign-in and sign-out need the CSRF header too (a forged sign-in would put a victim in the
/// attacker's account). Failed checks of a password are counted per account and per client
/// address (`SignInLimiter`) and logged with the name and address, never the password.
struct SessionController: Sendable {
    let service: ChatService
    var accounts: Accounts { service.accounts }

    func addPublicRoutes(to group: RouterGroup<ServerContext>) {
        group.post("session") { request, context in try await signIn(request, context: context) }
        group.delete("session") { request, context in try await signOut(request, context: context) }
    }

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.post("me/password") { request, context in try await changePassword(request, context: context) }
    }

    func signIn(_ request: Request, context: ServerContext) async throws -> Response {
        try SessionCookie.requireCSRFHeader(request.headers)
        let body = try decodeBody(SignInBody.self, from: try await request.collectBody(limit: 16 * 1024))
        let user = try await checkPassword(userName: body.name, password: body.password, context: context, param: "password")
        let session = try await accounts.startSession(for: user, lifetime: service.configuration.sessionLifetime)
        service.logger.info("signed in", metadata: ["user_name": "\(user.name)", "client_address": "\(clientAddress(context))"])
        var response = try jsonResponse(SessionResponse(user: user, expiresAt: session.record.expiresAt))
        response.headers[.setCookie] = SessionCookie.set(
            session.token, maxAge: Int(service.configuration.sessionLifetime.components.seconds),
            secure: service.configuration.secureCookies)
        response.headers[.cacheControl] = "no-store"
        return response
    }

    func signOut(_ request: Request, context: ServerContext) async throws -> Response {
        try SessionCookie.requireCSRFHeader(request.headers)
        var ended = false
        if let token = SessionCookie.token(in: request.headers) { ended = try await accounts.endSession(token: token) }
        var response = try jsonResponse(SessionDeletedResponse(deleted: ended))
        response.headers[.setCookie] = SessionCookie.clear(secure: service.configuration.secureCookies)
        return response
    }

    func changePassword(_ request: Request, context: ServerContext) async throws -> PasswordChangedResponse {
        let user = try context.requireUser()
        let body = try decodeBody(ChangePasswordBody.self, from: try await request.collectBody(limit: 16 * 1024))
        do { try Accounts.validatePassword(body.newPassword, field: "new_password") } catch let error as StoreError {
            throw APIError.invalidRequest(error.description, param: "new_password")
        }
        _ = try await checkPassword(userName: user.name, password: body.currentPassword, context: context, param: "current_password")
        _ = try await accounts.setPassword(userName: user.name, password: body.newPassword, keepingSession: context.sessionHash)
        service.logger.notice("password changed", metadata: ["user_name": "\(user.name)", "client_address": "\(clientAddress(context))"])
        return PasswordChangedResponse()
    }

    /// The user when the password is theirs; 429 while the account or address is over its limit,
    /// 401 otherwise (the same for an unknown user and a wrong password).
    private func checkPassword(userName: String, password: String, context: ServerContext, param: String) async throws -> User {
        let address = context.channel.remoteAddress?.ipAddress
        let shownName = String(userName.prefix(64))
        if let seconds = await service.signInLimiter.retryAfter(account: userName, address: address) {
            service.logger.warning(
                "sign-in refused: too many failures",
                metadata: ["user_name": "\(shownName)", "client_address": "\(address ?? "-")", "retry_after": "\(seconds)"])
            throw APIError(
                status: .tooManyRequests,
                message: "Too many failed sign-ins for this account or from this address. Retry in \(seconds) s.",
                type: "rate_limit_error", code: "too_many_sign_in_failures", retryAfter: seconds)
        }
        guard let user = try await accounts.checkPassword(userName: userName, password: password) else {
            await service.signInLimiter.recordFailure(account: userName, address: address)
            service.logger.warning(
                "sign-in failed: unknown user or wrong password",
                metadata: ["user_name": "\(shownName)", "client_address": "\(address ?? "-")"])
            throw APIError(
                status: .unauthorized, message: "Incorrect user name or password.", type: "invalid_request_error", param: param,
                code: "invalid_credentials")
        }
        await service.signInLimiter.recordSuccess(account: userName)
        return user
    }

    private func clientAddress(_ context: ServerContext) -> String { context.channel.remoteAddress?.ipAddress ?? "-" }
}

struct SignInBody: Decodable {
    var name: String
    var password: String
}

struct ChangePasswordBody: Decodable {
    var currentPassword: String
    var newPassword: String
    enum CodingKeys: String, CodingKey {
        case currentPassword = "current_password"
        case newPassword = "new_password"
    }
}

/// `POST /api/session`: who is signed in, and until when (seconds since 1970).
struct SessionResponse: APIResponse {
    var object = "session"
    var user: AdminUserResponse
    var expiresAt: Int64
    enum CodingKeys: String, CodingKey { case object, user, expiresAt = "expires_at" }
    init(user: User, expiresAt: Date) {
        self.user = AdminUserResponse(user)
        self.expiresAt = Int64(expiresAt.timeIntervalSince1970)
    }
}

struct SessionDeletedResponse: APIResponse {
    var object = "session.deleted"
    var deleted: Bool
}

struct PasswordChangedResponse: APIResponse {
    var object = "password.updated"
    /// Every other session of the user was ended.
    var otherSessionsEnded = true
    enum CodingKeys: String, CodingKey { case object, otherSessionsEnded = "other_sessions_ended" }
}
