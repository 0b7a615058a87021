//! What the API holds: a sender of commands to the owner and the latest published
//! snapshot. Reads never wait for the owner; mutating calls wait for their own answer.

use std::{
    net::IpAddr,
    sync::{Arc, mpsc},
};

use tokio::sync::watch;

use crate::{
    api::{Control, ControlError, Snapshot},
    flow_sharing::{FlowSharingStatus, FlowSharingView},
    owner::{Command, Reply},
};

/// The daemon as the API sees it.
#[derive(Clone)]
pub struct DaemonHandle {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<Snapshot>>,
    flow_sharing: Option<FlowSharingView>,
    bgp: Option<watch::Receiver<crate::bgp::BgpView>>,
    talkers: Option<watch::Receiver<Arc<crate::talkers::TopTalkersStatus>>>,
}

impl DaemonHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        view: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        Self {
            commands,
            view,
            flow_sharing: None,
            bgp: None,
            talkers: None,
        }
    }

    pub(crate) fn with_flow_sharing(mut self, view: FlowSharingView) -> Self {
        self.flow_sharing = Some(view);
        self
    }

    /// Reads BGP status from the BGP task's watch.
    pub(crate) fn with_bgp(mut self, bgp: watch::Receiver<crate::bgp::BgpView>) -> Self {
        self.bgp = Some(bgp);
        self
    }

    /// Reads top talkers from the owner's watch.
    pub(crate) fn with_top_talkers(
        mut self,
        talkers: watch::Receiver<Arc<crate::talkers::TopTalkersStatus>>,
    ) -> Self {
        self.talkers = Some(talkers);
        self
    }

    /// The latest published snapshot, shared.
    pub fn view(&self) -> Arc<Snapshot> {
        self.view.borrow().clone()
    }

    fn call(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), ControlError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopping = || ControlError::Internal("the daemon is stopping".into());
        self.commands.send(command(reply)).map_err(|_| stopping())?;
        wait(|| answer.recv()).map_err(|_| stopping())?
    }
}

/// Runs a blocking wait without holding up the other tasks of a multi-threaded runtime.
fn wait<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Control for DaemonHandle {
    fn snapshot(&self) -> Snapshot {
        Snapshot::clone(&self.view())
    }

    fn set_drain(&self, service: &str, backend: IpAddr, drained: bool) -> Result<(), ControlError> {
        self.call(|reply| Command::Drain {
            service: service.to_string(),
            backend,
            drained,
            reply,
        })
    }

    fn reload(&self) -> Result<(), ControlError> {
        self.call(|reply| Command::Reload { reply: Some(reply) })
    }

    fn flow_sharing(&self) -> Option<FlowSharingStatus> {
        self.flow_sharing.as_ref().map(FlowSharingView::status)
    }

    fn bgp(&self) -> crate::bgp::BgpStatus {
        (self.bgp.as_ref())
            .map(|b| b.borrow().status(std::time::Instant::now()))
            .unwrap_or_default()
    }

    fn top_talkers(&self) -> crate::talkers::TopTalkersStatus {
        (self.talkers.as_ref())
            .map(|t| crate::talkers::TopTalkersStatus::clone(&t.borrow()))
            .unwrap_or_default()
    }
}
