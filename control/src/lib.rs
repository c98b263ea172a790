pub mod netns;
pub mod cli;
