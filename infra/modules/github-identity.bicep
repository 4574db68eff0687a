// The identity the training workflow signs in as (azure/login with OIDC): a user-assigned identity with a
// federated credential for the workflow's repository and branch, so that no secret is stored in GitHub.
// Its role (AzureML Data Scientist on the workspace: submit the job, read it, register the model) is
// assigned in aml-access.bicep. The workflow_dispatch runs on a branch, so the token's subject is
// repo:<owner>/<name>:ref:refs/heads/<branch>.

param name string
param location string
param tags object = {}

@description('owner/name of the repository holding .github/workflows/train.yml (AL_GITHUB_REPOSITORY).')
param repository string
@description('Branch the orchestrator dispatches the workflow on (AL_GITHUB_REF).')
param ref string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

resource github 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: identity
  name: 'github-train-workflow'
  properties: {
    issuer: 'https://token.actions.githubusercontent.com'
    subject: 'repo:${repository}:ref:refs/heads/${ref}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
