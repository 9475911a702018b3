//! The scenarios of the comparison, and which tools take part in each.

use serde::{Deserialize, Serialize};

use crate::tools::Tool;

/// A scenario of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Initial sync of `mixed` into an empty directory.
    InitialMixed,
    /// Incremental round `mixed` -> `mutate`.
    Incremental,
    /// No-change round on `many`.
    NochangeMany,
    /// Initial sync of `many` into an empty directory.
    InitialMany,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 4] = [
        Scenario::InitialMixed,
        Scenario::Incremental,
        Scenario::NochangeMany,
        Scenario::InitialMany,
    ];

    /// Identifier in tables and JSON.
    pub fn slug(self) -> &'static str {
        match self {
            Scenario::InitialMixed => "initial-mixed",
            Scenario::Incremental => "incremental",
            Scenario::NochangeMany => "nochange-many",
            Scenario::InitialMany => "initial-many",
        }
    }

    /// One-line description.
    pub fn title(self) -> &'static str {
        match self {
            Scenario::InitialMixed => "initial sync of mixed into an empty directory",
            Scenario::Incremental => "incremental round mixed -> mutate",
            Scenario::NochangeMany => "no-change round on many",
            Scenario::InitialMany => "initial sync of many into an empty directory",
        }
    }

    /// Whether the destination starts empty.
    pub fn initial(self) -> bool {
        matches!(self, Scenario::InitialMixed | Scenario::InitialMany)
    }

    /// Whether `tool` takes part.
    pub fn runs(self, tool: Tool) -> bool {
        self.initial() || !tool.initial_only()
    }
}
