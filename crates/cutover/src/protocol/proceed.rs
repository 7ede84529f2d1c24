//! `cutover proceed COMPONENT`: releases a deploy held before its switch (`cutover deploy
//! --hold`), which then switches, drains and stabilizes as any deploy does.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProceedRequest {
    pub component: String,
    pub who: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProceedResponse {
    pub component: String,
    pub deploy_id: i64,
    pub release: String,
}
