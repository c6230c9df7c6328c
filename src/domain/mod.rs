//! Pure types and rules: ids, job statuses and their order, events, and the fold that turns a
//! log of events into table rows. Nothing here talks to Kafka, Postgres or the network.

pub mod events;
pub mod fold;
pub mod ids;
pub mod status;

pub use events::{
    JobRun, JobStatusChanged, RecommendationRequested, RecommendationsReady, RecommendedMovie,
    UserErased,
};
pub use fold::{JobEvent, JobRow, Projection, RecommendationsEvent};
pub use ids::{IdError, JobId, MovieId, UserId};
pub use status::JobStatus;
