//! The switcher's vocabulary: what is on air, why it changed, what an operator pins, and
//! the events the channel's task logs and counts.

use std::time::Duration;

/// Why the channel moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The source on air unpublished.
    Ended,
    /// The source on air sent nothing for the source timeout.
    Stalled,
    /// A higher-priority source is back (or any source, while the slate plays).
    Returned,
    /// An operator chose it.
    Forced,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Ended,
        Reason::Stalled,
        Reason::Returned,
        Reason::Forced,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Ended => "ended",
            Reason::Stalled => "stalled",
            Reason::Returned => "returned",
            Reason::Forced => "forced",
        }
    }
}

/// What is on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAir {
    Nothing,
    Slate,
    Source(usize),
}

/// What an operator pins the channel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Slate,
    Source(usize),
}

/// Something the task logs and counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Switched {
        from: OnAir,
        to: OnAir,
        reason: Reason,
        /// After a loss: from the lost source's last frame (or its unpublish) to the first
        /// frame of what replaced it.
        switch_time: Option<Duration>,
    },
    /// A source's format differs from the slate's; in strict mode the slate was refused
    /// (`slate_refused`): the channel never sends a format change.
    Mismatch {
        source: usize,
        differences: Vec<String>,
        slate_refused: bool,
    },
}
