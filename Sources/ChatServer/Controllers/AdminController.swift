import Foundation
import Hummingbird

/// Accounts over HTTP for the admin key: users and their API keys. What `sarvam users` and
/// `sarvam keys` do on the command line, reachable through any instance of a fleet (the store is
/// shared, so a key made through one instance works on every other at once). Others get 403.
///
///   GET    /api/admin/users                 the users
///   POST   /api/admin/users {"name": ..., "password": ...}
///                                           a user (with a password when given) and their first key
///                                           (the secret is shown once)
///   PUT    /api/admin/users/:name/password {"password": ...}
///                                           sets a user's password and ends all their sessions
///   POST   /api/admin/users/:name/keys      another key for a user
///   DELETE /api/admin/keys/:id              revokes a key
struct AdminController: Sendable {
    let service: ChatService

    func addRoutes(to group: RouterGroup<ServerContext>) {
        let admin = group.group("admin")
        admin.get("users") { _, context in try await users(context: context) }
        admin.post("users") { request, context in try await addUser(request, context: context) }
        admin.post("users/:name/keys") { _, context in try await addKey(context: context) }
        admin.put("users/:name/password") { request, context in try await resetPassword(request, context: context) }
        admin.delete("keys/:id") { _, context in try await revoke(context: context) }
    }

    private func requireAdmin(_ context: ServerContext) throws {
        guard try context.requireUser().isAdmin else { throw APIError.forbidden("Only the admin key may manage accounts.") }
    }

    func users(context: ServerContext) async throws -> AdminUserListResponse {
        try requireAdmin(context)
        return AdminUserListResponse(data: try await service.accounts.store.users().map(AdminUserResponse.init))
    }

    func addUser(_ request: Request, context: ServerContext) async throws -> EditedResponse<AdminIssuedKeyResponse> {
        try requireAdmin(context)
        let body = try decodeBody(AddUserBody.self, from: try await request.collectBody(limit: service.configuration.maxBodyBytes))
        if let password = body.password {
            do { try Accounts.validatePassword(password) } catch let error as StoreError {
                throw APIError.invalidRequest(error.description, param: "password")
            }
        }
        let user: User
        do {
            user = try await service.accounts.addUser(name: body.name)
        } catch let error as StoreError {
            throw error.description.contains("already exists")
                ? APIError.conflict(error.description) : APIError.invalidRequest(error.description, param: "name")
        }
        if let password = body.password {
            _ = try await service.accounts.setPassword(userName: user.name, password: password)
        }
        let issued = try await service.accounts.issueKey(for: user, key: nil)
        return EditedResponse(status: .created, response: AdminIssuedKeyResponse(user: AdminUserResponse(user), issued))
    }

    func addKey(context: ServerContext) async throws -> EditedResponse<AdminIssuedKeyResponse> {
        try requireAdmin(context)
        let name = try context.parameters.require("name")
        guard let user = try await service.accounts.store.user(named: name) else { throw APIError.notFound("No user named \(name).") }
        let issued = try await service.accounts.issueKey(for: user, key: nil)
        return EditedResponse(status: .created, response: AdminIssuedKeyResponse(user: AdminUserResponse(user), issued))
    }

    func resetPassword(_ request: Request, context: ServerContext) async throws -> AdminPasswordResetResponse {
        try requireAdmin(context)
        let name = try context.parameters.require("name")
        let body = try decodeBody(PasswordBody.self, from: try await request.collectBody(limit: 16 * 1024))
        do { try Accounts.validatePassword(body.password) } catch let error as StoreError {
            throw APIError.invalidRequest(error.description, param: "password")
        }
        guard try await service.accounts.store.user(named: name) != nil else { throw APIError.notFound("No user named \(name).") }
        // The admin resetting their own password from a session keeps that session.
        let own = try context.requireUser().name == name
        let user = try await service.accounts.setPassword(
            userName: name, password: body.password, keepingSession: own ? context.sessionHash : nil)
        service.logger.notice("password reset by the admin", metadata: ["user_name": "\(user.name)"])
        return AdminPasswordResetResponse(user: AdminUserResponse(user))
    }

    func revoke(context: ServerContext) async throws -> AdminKeyRevokedResponse {
        try requireAdmin(context)
        let id = try context.parameters.require("id")
        guard try await service.accounts.store.revokeKey(id: id) else { throw APIError.notFound("No active key with id \(id).") }
        return AdminKeyRevokedResponse(id: id)
    }
}

struct AddUserBody: Decodable {
    var name: String
    var password: String?
}

struct PasswordBody: Decodable { var password: String }

struct AdminPasswordResetResponse: APIResponse {
    var object = "user.password_set"
    var user: AdminUserResponse
    /// Every session of the user (but the admin's own) was ended.
    var sessionsEnded = true
    enum CodingKeys: String, CodingKey { case object, user, sessionsEnded = "sessions_ended" }
}

struct AdminUserResponse: APIResponse {
    var id: Int64
    var name: String
    var isAdmin: Bool
    enum CodingKeys: String, CodingKey { case id, name, isAdmin = "is_admin" }
    init(_ user: User) {
        id = user.userId
        name = user.name
        isAdmin = user.isAdmin
    }
}

struct AdminUserListResponse: APIResponse {
    var object = "list"
    var data: [AdminUserResponse]
}

struct AdminIssuedKeyResponse: APIResponse {
    var user: AdminUserResponse
    /// The secret: in this response only, never stored.
    var key: String
    var keyId: String
    enum CodingKeys: String, CodingKey { case user, key, keyId = "key_id" }
    init(user: AdminUserResponse, _ issued: Accounts.IssuedKey) {
        self.user = user
        key = issued.key
        keyId = issued.record.id
    }
}

struct AdminKeyRevokedResponse: APIResponse {
    var id: String
    var object = "api_key.deleted"
    var deleted = true
}
