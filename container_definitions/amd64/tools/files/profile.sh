echo "tools image: $(cat /etc/containers-ci-variant)"
