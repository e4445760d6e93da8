"""tunnels package."""
