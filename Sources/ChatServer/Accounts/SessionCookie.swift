import Foundation
import HTTPTypes

/// The sign-in cookie and the page's CSRF header.
///
/// The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (the browser sends it only on
/// requests this site starts), `Path=/`, and `Secure` when the server speaks TLS. Requests that
/// change something and are signed in by the cookie must also carry `X-Sarvam-CSRF: 1`: a page on
/// another site cannot add a custom header without a CORS preflight, which this server never
/// grants, so a forged form or image request never has it (docs/accounts.md).
enum SessionCookie {
    static let name = "sarvam_session"
    static let csrfHeader = HTTPField.Name("X-Sarvam-CSRF")!

    /// The session token from the request's `Cookie` headers (HTTP/2 may split them), if any.
    static func token(in headers: HTTPFields) -> String? {
        for field in headers[values: .cookie] {
            for pair in field.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name else { continue }
                let value = parts[1].trimmingCharacters(in: .whitespaces)
                if !value.isEmpty { return value }
            }
        }
        return nil
    }

    /// The `Set-Cookie` value that gives the browser `token` for `maxAge` seconds.
    static func set(_ token: String, maxAge: Int, secure: Bool) -> String {
        "\(name)=\(token); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
    }

    /// The `Set-Cookie` value that makes the browser forget the cookie.
    static func clear(secure: Bool) -> String { set("", maxAge: 0, secure: secure) }

    /// Methods that may change something: these need the CSRF header when signed in by cookie.
    static func isUnsafe(_ method: HTTPRequest.Method) -> Bool {
        method != .get && method != .head && method != .options
    }

    static func requireCSRFHeader(_ headers: HTTPFields) throws {
        guard headers[csrfHeader] == "1" else {
            throw APIError(
                status: .forbidden,
                message: "A request signed in by the session cookie that changes something must send the header 'X-Sarvam-CSRF: 1' "
                    + "(the page does); API clients send 'Authorization: Bearer <key>' instead.",
                type: "permission_error", code: "csrf_header_missing")
        }
    }
}
