//! Why a wire message is refused: the [`RejectReason`] codes the dead-letter topic and the
//! per-reason counter carry, and the [`Rejection`] that [`super::decode`] returns.

use std::fmt;

/// Why a message was rejected. The [`code`](RejectReason::code) is stable: it is the
/// `reason` header of the dead-letter record and the label of the per-reason counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The message is larger than `validation.max_message_bytes`.
    Oversize,
    /// The message is not valid UTF-8.
    InvalidUtf8,
    /// The message is not well-formed JSON.
    InvalidJson,
    /// Well-formed JSON that breaks the schema: a missing, extra or wrongly typed field.
    Schema,
    /// An identifier or metric name breaks its pattern or length.
    InvalidId,
    /// A value is not a finite number.
    NonFiniteValue,
    /// A timestamp is not RFC 3339 with an offset.
    InvalidTs,
    /// A timestamp lies outside the plausible window.
    TsOutOfWindow,
}

impl RejectReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RejectReason; 8] = [
        Self::Oversize,
        Self::InvalidUtf8,
        Self::InvalidJson,
        Self::Schema,
        Self::InvalidId,
        Self::NonFiniteValue,
        Self::InvalidTs,
        Self::TsOutOfWindow,
    ];

    /// Stable snake-case code, e.g. `invalid_json`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Oversize => "oversize",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::Schema => "schema",
            Self::InvalidId => "invalid_id",
            Self::NonFiniteValue => "non_finite_value",
            Self::InvalidTs => "invalid_ts",
            Self::TsOutOfWindow => "ts_out_of_window",
        }
    }

    /// The reason whose [`code`](Self::code) is `code`.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// A rejected message: the reason and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// What exactly was wrong, for the operator reading the dead-letter topic.
    pub detail: String,
}

pub(crate) fn reject(reason: RejectReason, detail: impl fmt::Display) -> Rejection {
    Rejection {
        reason,
        detail: detail.to_string(),
    }
}
