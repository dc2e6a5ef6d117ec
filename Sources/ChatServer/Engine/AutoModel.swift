import Foundation

/// `"model": "auto"`: with two or more local models of known size, the smallest is the light
/// tier and the largest the heavy one, and `TierRouter` picks per request. With one model, `auto`
/// is that model.
public struct ModelTiers: Sendable {
    public var light: any ChatEngine
    public var heavy: any ChatEngine

    public func engine(_ tier: ModelTier) -> any ChatEngine { tier == .light ? light : heavy }
    public func tier(ofModel id: String?) -> ModelTier? {
        guard let id else { return nil }
        if id == light.modelInfo.id { return .light }
        if id == heavy.modelInfo.id { return .heavy }
        return nil
    }
}

/// The engine a request runs on, and for `auto` what served it and why.
public struct EngineChoice: Sendable {
    public var engine: any ChatEngine
    /// `light` or `heavy`, or the overflow upstream's `NAME/MODEL`; nil when the model was named.
    public var tier: String?
    public var reason: RoutingReason?
}

extension EngineCatalog {
    public static let autoModel = "auto"

    /// The light and heavy tiers among the loaded models, nil unless two differ in size.
    public var tiers: ModelTiers? {
        guard case .ready(let engines) = state else { return nil }
        let sized = engines.filter { $0.modelInfo.parameters != nil }.sorted { $0.modelInfo.parameters! < $1.modelInfo.parameters! }
        guard let light = sized.first, let heavy = sized.last, light.modelInfo.parameters! < heavy.modelInfo.parameters! else {
            return nil
        }
        return ModelTiers(light: light, heavy: heavy)
    }
}

extension ChatService {
    /// The engine for `model`. For `auto` (the tiers' router): `messages` are what the model will
    /// read, `previousModel` the model of the conversation's last reply, `thinkHarder` the user's
    /// request for the larger model. Counts the decision in the metrics.
    func selectEngine(model: String?, messages: [ChatMessage], previousModel: String?, thinkHarder: Bool) throws -> EngineChoice {
        guard model == EngineCatalog.autoModel else { return EngineChoice(engine: try catalog.engine(named: model)) }
        guard let tiers = catalog.tiers else {
            let engine = try catalog.engine(named: nil)
            let load = { engine.load(promptTokens: (try? engine.countTokens(messages)) ?? 0) }
            if tierRouter.settings.overflowModel != nil, let lightLoad = load(),
                tierRouter.overflows(lightLoad: lightLoad, heavyLoad: nil), let overflow = overflowChoice()
            {
                return overflow
            }
            return EngineChoice(engine: engine)
        }
        let promptTokens = (try? tiers.light.countTokens(messages)) ?? 0
        let lastUser = messages.last(where: { $0.role == .user })?.content ?? ""
        let features = RoutingFeatures(
            promptTokens: promptTokens, historyTurns: max(0, messages.filter { $0.role == .user }.count - 1),
            looksLikeCode: RoutingFeatures.looksLikeCode(lastUser), thinkHarder: thinkHarder,
            conversationTier: tiers.tier(ofModel: previousModel))
        let calm = TierLoad(predictedWaitSeconds: 0, stepSecondsP95: 0)
        let heavyLoad = tiers.heavy.load(promptTokens: promptTokens) ?? calm
        let (tier, reason) = tierRouter.route(features, heavyLoad: heavyLoad, now: ContinuousClock.now.secondsSinceStart)
        if tierRouter.settings.overflowModel != nil,
            tierRouter.overflows(lightLoad: tiers.light.load(promptTokens: promptTokens) ?? calm, heavyLoad: heavyLoad),
            let overflow = overflowChoice()
        {
            return overflow
        }
        SarvamMetrics.recordRouting(tier: tier.rawValue, reason: reason.rawValue)
        return EngineChoice(engine: tiers.engine(tier), tier: tier.rawValue, reason: reason)
    }

    /// The overflow upstream's model, counted; nil (the request stays local) while it cannot
    /// take requests: its upstream down or the model not in its list.
    private func overflowChoice() -> EngineChoice? {
        guard let name = tierRouter.settings.overflowModel, let engine = try? catalog.engine(named: name) else { return nil }
        SarvamMetrics.recordRouting(tier: name, reason: RoutingReason.overflow.rawValue)
        return EngineChoice(engine: engine, tier: name, reason: .overflow)
    }
}

extension ContinuousClock.Instant {
    /// Seconds since an arbitrary fixed instant (the process's first use of this).
    var secondsSinceStart: Double { (self - processStart) / .seconds(1) }
}

private let processStart = ContinuousClock.now
