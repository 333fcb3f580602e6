//! How an operation runs, whatever carried it: documents parsed and validated once and cached
//! ([`documents`]), persisted queries ([`persisted`]), variables coerced on the document's own
//! input types ([`variables`]), the memo of pure responses ([`memo`]), live queries kept up to
//! date by the write path ([`live`]), and the pipeline that puts them together ([`pipeline`]).

pub mod documents;
pub mod incremental;
pub mod live;
pub mod memo;
pub mod persisted;
pub mod pipeline;
pub mod variables;
