"""leaderboard package of the CLIS toolkit."""
