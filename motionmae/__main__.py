from motionmae.cli import main

raise SystemExit(main())
