"""RL on the student's own rollouts: advantages (pure), the policy update (torch), rejection-sampling rounds."""
