import Foundation
import Hummingbird

/// A user's own limits, for the admin key (others get 403):
///
///   GET /api/admin/users/:name/quota   the user's own limits and what applies with the defaults
///   PUT /api/admin/users/:name/quota   {"requests_per_minute": N|null, "tokens_per_day": N|null}
///
/// In the PUT body, null or a missing field means the server's default and 0 means no limit.
struct QuotaController: Sendable {
    let service: ChatService

    func addRoutes(to group: RouterGroup<ServerContext>) {
        group.get("admin/users/:name/quota") { _, context in try await show(context: context) }
        group.put("admin/users/:name/quota") { request, context in try await set(request, context: context) }
    }

    private func user(_ context: ServerContext) async throws -> User {
        guard try context.requireUser().isAdmin else { throw APIError.forbidden("Only the admin key may manage accounts.") }
        let name = try context.parameters.require("name")
        guard let user = try await service.accounts.store.user(named: name) else { throw APIError.notFound("No user named \(name).") }
        return user
    }

    func show(context: ServerContext) async throws -> UserQuotaResponse {
        let user = try await user(context)
        return UserQuotaResponse(
            user: user.name, own: try await service.store.quotaOverrides(userId: user.userId),
            applied: try await service.quotas.status(userId: user.userId))
    }

    func set(_ request: Request, context: ServerContext) async throws -> UserQuotaResponse {
        let user = try await user(context)
        let body = try decodeBody(QuotaBody.self, from: try await request.collectBody(limit: service.configuration.maxBodyBytes))
        for (value, name) in [(body.requestsPerMinute, "requests_per_minute"), (body.tokensPerDay, "tokens_per_day")] {
            if let value, value < 0 {
                throw APIError.invalidRequest("\(name) must be 0 (no limit), a positive number, or null (the default); got \(value).", param: name)
            }
        }
        try await service.store.setQuotaOverrides(
            userId: user.userId, QuotaLimits(requestsPerMinute: body.requestsPerMinute, tokensPerDay: body.tokensPerDay))
        return try await show(context: context)
    }
}

struct QuotaBody: Decodable {
    var requestsPerMinute: Int?
    var tokensPerDay: Int?
    enum CodingKeys: String, CodingKey { case requestsPerMinute = "requests_per_minute", tokensPerDay = "tokens_per_day" }
}

struct UserQuotaResponse: APIResponse {
    var user: String
    /// The user's own limits (null: the server's default; 0: none).
    var own: QuotaLimits
    /// What applies now (null: no limit) and the use so far.
    var applied: QuotaStatus

    enum CodingKeys: String, CodingKey { case user, own, applied }
    enum OwnKeys: String, CodingKey { case requestsPerMinute = "requests_per_minute", tokensPerDay = "tokens_per_day" }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(user, forKey: .user)
        var o = c.nestedContainer(keyedBy: OwnKeys.self, forKey: .own)
        try o.encode(own.requestsPerMinute, forKey: .requestsPerMinute)
        try o.encode(own.tokensPerDay, forKey: .tokensPerDay)
        try c.encode(applied, forKey: .applied)
    }
}

extension QuotaBody: HasIntegerFields {
    static let integerFields = ["requests_per_minute", "tokens_per_day"]
}
