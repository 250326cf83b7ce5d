//! The event taxonomy (default severities, which types are incidents) and [`AcceptedEvent`],
//! the form in which a validated, located event travels from `grid` to `window` and `rules`.

// No panic path reachable from input, state or configuration (README "Security").

use crate::grid::CellIndex;
use crate::proto::{EventType, IncidentEvent};

/// Every event type of the taxonomy, in enum order (without `EVENT_TYPE_UNSPECIFIED`).
pub const ALL_EVENT_TYPES: [EventType; 23] = [
    EventType::FireSmoke,
    EventType::GasLeak,
    EventType::ElectricalFault,
    EventType::Sos,
    EventType::ElderFall,
    EventType::ElderInactive,
    EventType::PerimeterIntrusion,
    EventType::Tripwire,
    EventType::HighAltitudeThrow,
    EventType::DoorForced,
    EventType::DeviceTamper,
    EventType::EbikeInElevator,
    EventType::EbikeCharging,
    EventType::FireLaneBlocked,
    EventType::Loitering,
    EventType::CrowdGathering,
    EventType::Tailgating,
    EventType::FraudWarning,
    EventType::FraudDissuaded,
    EventType::FraudReported,
    EventType::FraudCaseFiled,
    EventType::DeviceOffline,
    EventType::VideoLoss,
];

/// Severity used when an event carries severity 0 ("use the type's default").
///
/// 1 is the most severe (GB/T 28181 alarm priority). The values are a design choice recorded
/// in `seeds/README.md`.
pub fn default_severity(event_type: EventType) -> u8 {
    match event_type {
        EventType::FireSmoke
        | EventType::GasLeak
        | EventType::ElectricalFault
        | EventType::Sos
        | EventType::ElderFall
        | EventType::ElderInactive => 1,
        EventType::PerimeterIntrusion
        | EventType::Tripwire
        | EventType::HighAltitudeThrow
        | EventType::DoorForced
        | EventType::FraudWarning
        | EventType::FraudReported
        | EventType::FraudCaseFiled => 2,
        EventType::DeviceTamper
        | EventType::EbikeInElevator
        | EventType::EbikeCharging
        | EventType::FireLaneBlocked
        | EventType::Loitering
        | EventType::CrowdGathering
        | EventType::FraudDissuaded => 3,
        EventType::Tailgating | EventType::DeviceOffline | EventType::VideoLoss => 4,
        EventType::Unspecified => 4,
    }
}

/// Whether events of this type are incidents (counted in incident metrics). Device health
/// events (`DEVICE_OFFLINE`, `VIDEO_LOSS`) are operations signals, never incidents.
pub fn is_incident(event_type: EventType) -> bool {
    !matches!(
        event_type,
        EventType::DeviceOffline | EventType::VideoLoss | EventType::Unspecified
    )
}

/// Chinese name of the type, for operator-facing text.
pub fn chinese_name(event_type: EventType) -> &'static str {
    match event_type {
        EventType::FireSmoke => "烟感报警",
        EventType::GasLeak => "燃气泄漏",
        EventType::ElectricalFault => "用电异常",
        EventType::Sos => "一键报警",
        EventType::ElderFall => "老人跌倒",
        EventType::ElderInactive => "独居老人无活动",
        EventType::PerimeterIntrusion => "周界入侵",
        EventType::Tripwire => "绊线报警",
        EventType::HighAltitudeThrow => "高空抛物",
        EventType::DoorForced => "强行开门",
        EventType::DeviceTamper => "设备防拆",
        EventType::EbikeInElevator => "电动车进电梯",
        EventType::EbikeCharging => "飞线充电",
        EventType::FireLaneBlocked => "消防通道占用",
        EventType::Loitering => "人员徘徊",
        EventType::CrowdGathering => "人员聚集",
        EventType::Tailgating => "尾随进入",
        EventType::FraudWarning => "涉诈预警",
        EventType::FraudDissuaded => "涉诈劝阻",
        EventType::FraudReported => "涉诈接报",
        EventType::FraudCaseFiled => "涉诈立案",
        EventType::DeviceOffline => "设备离线",
        EventType::VideoLoss => "视频丢失",
        EventType::Unspecified => "未知",
    }
}

/// A validated event with its grid cell resolved: what `dedup`, `window` and `rules` see.
///
/// It borrows the decoded event so the hot path copies nothing it does not need.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedEvent<'a> {
    /// The decoded (and pseudonymized) event, for ids and attributes.
    pub event: &'a IncidentEvent,
    /// The event's type, known to be a valid taxonomy member.
    pub event_type: EventType,
    /// Effective severity 1..=4 (the type's default substituted for 0).
    pub severity: u8,
    /// Event time in epoch milliseconds.
    pub occurred_at_millis: i64,
    /// The grid cell the event belongs to.
    pub cell: CellIndex,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_default_severity_between_one_and_four() {
        for event_type in ALL_EVENT_TYPES {
            let severity = default_severity(event_type);
            assert!((1..=4).contains(&severity), "{event_type:?} -> {severity}");
        }
    }

    #[test]
    fn all_event_types_lists_each_enum_value_once() {
        let numbers: Vec<i32> = ALL_EVENT_TYPES
            .iter()
            .map(|event_type| *event_type as i32)
            .collect();
        assert_eq!(numbers, (1..=23).collect::<Vec<i32>>());
    }

    #[test]
    fn device_health_events_are_not_incidents() {
        assert!(!is_incident(EventType::DeviceOffline));
        assert!(!is_incident(EventType::VideoLoss));
        assert!(is_incident(EventType::FireSmoke));
        assert!(is_incident(EventType::FraudCaseFiled));
    }
}
