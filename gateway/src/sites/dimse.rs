//! A site reached by DIMSE (pacs-adapter): its association pool and retrieve method. The only
//! code of the gateway that calls pacs-adapter's services once it serves (`check` echoes before);
//! crate::sites::Site wraps each call with the site's health and accounting.

use std::time::{Duration, Instant};

use dicom_object::InMemDicomObject;
use pacs_adapter::{
    c_move, echo, find, get, list_instances, retrieve_parallel, store, AssociationPool, DimseError, DimseStream,
    FindRequest, PlannedInstance, RetrieveMethod, RetrieveRequest, RetrieveTarget, RetrievedInstance, StoreOutcome,
};

#[derive(Debug)]
pub(crate) struct Dimse {
    pub(crate) pool: AssociationPool,
    pub(crate) method: RetrieveMethod,
}

impl Dimse {
    /// A C-FIND, its matches collected up to `at_most` (then cancelled at the site); true when
    /// there were more.
    pub(crate) async fn find(
        &self,
        request: FindRequest,
        at_most: usize,
    ) -> Result<(Vec<InMemDicomObject>, bool), DimseError> {
        find(&self.pool, request).await?.try_collect_at_most(at_most).await
    }

    /// A C-GET or C-MOVE of `target`: a study or series as instance-level sub-requests over
    /// `associations` associations when that is more than one.
    pub(crate) async fn retrieve(
        &self,
        target: RetrieveTarget,
        associations: usize,
    ) -> Result<DimseStream<RetrievedInstance>, DimseError> {
        if associations > 1 && target.instances.is_empty() {
            return retrieve_parallel(&self.pool, &self.method, target, associations, None).await;
        }
        let request = RetrieveRequest::new(target);
        match &self.method {
            RetrieveMethod::Get => get(&self.pool, request).await,
            RetrieveMethod::Move(scp) => c_move(&self.pool, scp, request).await,
        }
    }

    /// The instances under `scope`, listed by C-FIND.
    pub(crate) async fn list_instances(
        &self,
        scope: &RetrieveTarget,
        deadline: Instant,
    ) -> Result<Vec<PlannedInstance>, DimseError> {
        list_instances(&self.pool, scope, Some(deadline)).await
    }

    /// C-STORE of one Part-10 instance.
    pub(crate) async fn store(&self, part10: &[u8], deadline: Instant) -> Result<StoreOutcome, DimseError> {
        store(&self.pool, part10, Some(deadline)).await
    }

    /// A C-ECHO.
    pub(crate) async fn echo(&self) -> Result<Duration, DimseError> {
        echo(&self.pool).await
    }
}
