from motionmae.cli.main import main

raise SystemExit(main())
