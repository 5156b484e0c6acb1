from worker_mesh.workers.cli import main

main()
